//! Which component the multi-call `ferrolb` binary runs.

use std::ffi::OsString;
use std::path::Path;

/// A FerroLB component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    Controller,
    Speaker,
}

impl Component {
    /// The component's own binary name, which its flags and `--version` go by.
    pub fn program(self) -> &'static str {
        match self {
            Component::Controller => "ferrolb-controller",
            Component::Speaker => "ferrolb-speaker",
        }
    }

    fn named(name: &str) -> Option<Self> {
        match name {
            "ferrolb-controller" | "controller" => Some(Component::Controller),
            "ferrolb-speaker" | "speaker" => Some(Component::Speaker),
            _ => None,
        }
    }
}

pub const USAGE: &str = "usage: ferrolb controller [FLAGS] | ferrolb speaker [FLAGS]\n\
    (or run it as ferrolb-controller or ferrolb-speaker; --help after the component lists its flags)";

/// The component `args` (argv, program name first) asks for, by the program's name or else by the
/// first argument; leaves `args` as that component's own argv, its program name first.
pub fn pick(args: &mut Vec<OsString>) -> Option<Component> {
    let program = args.first()?;
    let called = Path::new(program).file_name()?.to_str()?;
    if let Some(component) = Component::named(called) {
        return Some(component);
    }
    let component = Component::named(args.get(1)?.to_str()?)?;
    args.remove(0);
    args[0] = OsString::from(component.program());
    Some(component)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(words: &[&str]) -> Vec<OsString> {
        words.iter().map(OsString::from).collect()
    }

    #[test]
    fn the_name_it_is_called_by_picks_the_component() {
        let mut args = argv(&["/usr/local/bin/ferrolb-speaker", "--log-format=json"]);
        assert_eq!(pick(&mut args), Some(Component::Speaker));
        assert_eq!(
            args,
            argv(&["/usr/local/bin/ferrolb-speaker", "--log-format=json"])
        );
        let mut args = argv(&["ferrolb-controller"]);
        assert_eq!(pick(&mut args), Some(Component::Controller));
    }

    #[test]
    fn otherwise_the_first_argument_does() {
        let mut args = argv(&["/usr/local/bin/ferrolb", "speaker", "--node-name", "a"]);
        assert_eq!(pick(&mut args), Some(Component::Speaker));
        assert_eq!(args, argv(&["ferrolb-speaker", "--node-name", "a"]));
        let mut args = argv(&["ferrolb", "controller", "--version"]);
        assert_eq!(pick(&mut args), Some(Component::Controller));
        assert_eq!(args, argv(&["ferrolb-controller", "--version"]));
    }

    #[test]
    fn anything_else_is_a_usage_error() {
        for words in [
            &["ferrolb"][..],
            &["ferrolb", "bgp"],
            &["ferrolb", "--version"],
            &[],
        ] {
            assert_eq!(pick(&mut argv(words)), None, "{words:?}");
        }
    }
}
