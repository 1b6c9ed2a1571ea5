pub async fn run(_args: LoadArgs) -> anyhow::Result<()> {
    Ok(())
}
#[derive(clap::Args, Debug)]
pub struct LoadArgs {}
