//! Product pictures, generated: every `/images/<category>/<name>.svg` path is a small SVG drawn
//! from the path alone (colours from a hash of it, a shape per category). Nothing is downloaded
//! or stored, the same path always gives the same bytes, and every `image_url` the catalog
//! accepts therefore loads.

use shop_contracts::catalog::{PICTURE_HEIGHT, PICTURE_WIDTH, PICTURES_PREFIX};

/// Whether `url` names a picture this module draws: `/images/<segment>/<segment>.svg`, each
/// segment lower-case letters, digits and dashes.
pub fn is_picture_url(url: &str) -> bool {
    let Some(rest) = url
        .strip_prefix(PICTURES_PREFIX)
        .and_then(|r| r.strip_prefix('/'))
    else {
        return false;
    };
    match rest.split_once('/') {
        Some((category, file)) => {
            url.len() <= 200
                && is_segment(category)
                && file.strip_suffix(".svg").is_some_and(is_segment)
        }
        None => false,
    }
}

fn is_segment(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// FNV-1a: a stable hash for colours; not for security.
fn hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The shape drawn for a category: a few SVG elements in a 480×360 box, in `ink`.
fn shape(category: &str, ink: &str) -> String {
    match category {
        "books" => format!(
            r#"<rect x="170" y="90" width="140" height="180" rx="8" fill="{ink}"/><rect x="186" y="90" width="10" height="180" fill="white" opacity=".4"/>"#
        ),
        "clothing" => format!(
            r#"<path d="M190 90l-60 40 25 40 25-15v125h120V155l25 15 25-40-60-40c-10 20-25 30-50 30s-40-10-50-30z" fill="{ink}"/>"#
        ),
        "electronics" => format!(
            r#"<rect x="140" y="100" width="200" height="130" rx="10" fill="{ink}"/><rect x="155" y="115" width="170" height="100" fill="white" opacity=".35"/><rect x="200" y="240" width="80" height="14" rx="4" fill="{ink}"/>"#
        ),
        "home" => format!(
            r#"<path d="M240 80l110 95h-30v105H160V175h-30z" fill="{ink}"/><rect x="220" y="210" width="40" height="70" fill="white" opacity=".4"/>"#
        ),
        "kitchen" => format!(
            r#"<path d="M150 150h180v70a50 50 0 0 1-50 50h-80a50 50 0 0 1-50-50z" fill="{ink}"/><rect x="200" y="120" width="80" height="22" rx="8" fill="{ink}"/>"#
        ),
        "outdoors" => format!(
            r#"<path d="M120 280l90-170 50 90 30-45 70 125z" fill="{ink}"/><circle cx="340" cy="110" r="26" fill="{ink}" opacity=".6"/>"#
        ),
        "sports" => format!(
            r#"<circle cx="240" cy="180" r="95" fill="{ink}"/><path d="M145 180h190M240 85v190" stroke="white" stroke-width="6" opacity=".5"/>"#
        ),
        "toys" => format!(
            r#"<rect x="160" y="170" width="70" height="70" rx="6" fill="{ink}"/><rect x="250" y="170" width="70" height="70" rx="6" fill="{ink}" opacity=".8"/><rect x="205" y="95" width="70" height="70" rx="6" fill="{ink}" opacity=".6"/>"#
        ),
        _ => format!(r#"<circle cx="240" cy="180" r="90" fill="{ink}"/>"#),
    }
}

/// The SVG for a picture path (one [`is_picture_url`] accepts).
pub fn draw(url: &str) -> String {
    let h = hash(url);
    let category = url
        .trim_start_matches(PICTURES_PREFIX)
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or_default();
    let hue = h % 360;
    let tilt = (h >> 12) % 60;
    let background = format!("hsl({hue} 45% 90%)");
    let band = format!("hsl({} 50% 80%)", (hue + 30) % 360);
    let ink = format!("hsl({} 45% 35%)", (hue + 180) % 360);
    format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{PICTURE_WIDTH}" height="{PICTURE_HEIGHT}" viewBox="0 0 480 360"><rect width="480" height="360" fill="{background}"/><path d="M0 {y1}L480 {y2}V360H0z" fill="{band}"/>{shape}</svg>"#,
        y1 = 250 + tilt,
        y2 = 310 - tilt,
        shape = shape(category, &ink),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picture_paths_are_recognised_strictly() {
        for ok in ["/images/books/boo-06a.svg", "/images/x/1.svg"] {
            assert!(is_picture_url(ok), "{ok}");
        }
        for bad in [
            "/images/books/6.jpg",
            "/images/books.svg",
            "/images/Books/a.svg",
            "/images/books/../a.svg",
            "/images/books/a/b.svg",
            "https://cdn.example/a.svg",
            "/other/books/a.svg",
        ] {
            assert!(!is_picture_url(bad), "{bad}");
        }
    }

    #[test]
    fn the_same_path_draws_the_same_picture_and_others_differ() {
        let a = draw("/images/books/boo-06a.svg");
        assert_eq!(a, draw("/images/books/boo-06a.svg"));
        assert_ne!(a, draw("/images/books/boo-07a.svg"));
        assert!(a.starts_with("<svg") && a.contains(r#"width="480" height="360""#));
        assert!(a.len() < 2_000, "a picture is small: {} bytes", a.len());
    }
}
