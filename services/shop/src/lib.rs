//! The parts of the `shop` binary that its process tests use too: the service names,
//! `shop up`'s way of starting them (ports, environment, start order), and `shop load`'s traffic
//! mix (the fault tests run it in-process to read its report).

pub mod load;
pub mod up;

use clap::builder::{PossibleValuesParser, TypedValueParser};
/// The bundled services, as the contracts name them: `shop serve <name>`, ports, environment.
pub use shop_contracts::ServiceName;

/// The command line's parser of a service name: the contracts' names, listed in `--help` and in
/// the error for a name that is not one.
pub fn service_name_parser() -> impl TypedValueParser<Value = ServiceName> {
    PossibleValuesParser::new(ServiceName::ALL.map(ServiceName::as_str)).map(|name| {
        ServiceName::parse(&name).expect("the possible values are the contracts' names")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_contract_name_parses_and_others_are_refused() {
        let command = clap::Command::new("shop");
        for service in ServiceName::ALL {
            let parsed = service_name_parser()
                .parse_ref(&command, None, std::ffi::OsStr::new(service.as_str()))
                .expect("a contracts name parses");
            assert_eq!(parsed, service);
        }
        let refused =
            service_name_parser().parse_ref(&command, None, std::ffi::OsStr::new("billing"));
        assert!(refused.is_err(), "an unknown service name is refused");
    }
}
