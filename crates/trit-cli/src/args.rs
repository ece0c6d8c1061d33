//! llama.cpp-style command-line flags: single-dash long names (`-ngl`, `-cnv`), aliases,
//! `--flag=value`, and a usage line for anything unknown. clap cannot express
//! `-ngl`-style flags, and drop-in compatibility needs exactly llama.cpp's spellings.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::str::FromStr;

/// One flag: its spellings (the first is canonical), its value's name if it takes one.
pub struct Flag {
    pub names: &'static [&'static str],
    pub value: Option<&'static str>,
    pub help: &'static str,
}

pub const fn flag(names: &'static [&'static str], value: Option<&'static str>, help: &'static str) -> Flag {
    Flag { names, value, help }
}

#[derive(Debug, thiserror::Error)]
pub enum ArgError {
    #[error("{0}")]
    Usage(String),
    /// `-h`: the caller prints the help text and exits 0.
    #[error("help requested")]
    Help,
}

/// What the user gave: canonical flag name → values in order given.
#[derive(Debug, Default)]
pub struct Parsed {
    values: HashMap<&'static str, Vec<String>>,
    pub positional: Vec<String>,
    prog: String,
}

pub fn usage_line(prog: &str, flags: &[Flag]) -> String {
    let mut s = format!("usage: {prog}");
    for f in flags {
        match f.value {
            Some(v) => write!(s, " [{} {v}]", f.names[0]).unwrap(),
            None => write!(s, " [{}]", f.names[0]).unwrap(),
        }
    }
    s
}

pub fn help_text(prog: &str, about: &str, flags: &[Flag]) -> String {
    let mut s = format!("{about}\n\n{}\n\n", usage_line(prog, flags));
    for f in flags {
        let mut left = f.names.join(", ");
        if let Some(v) = f.value {
            left.push(' ');
            left.push_str(v);
        }
        writeln!(s, "  {left:<36} {}", f.help).unwrap();
    }
    s
}

pub fn parse(prog: &str, flags: &[Flag], args: &[String]) -> Result<Parsed, ArgError> {
    let mut by_name: HashMap<&str, &Flag> = HashMap::new();
    for f in flags {
        for n in f.names {
            by_name.insert(n, f);
        }
    }
    let mut out = Parsed { prog: prog.to_string(), ..Default::default() };
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        i += 1;
        if a == "-h" || a == "--help" {
            return Err(ArgError::Help);
        }
        if !a.starts_with('-') || a == "-" || a.parse::<f64>().is_ok() {
            out.positional.push(a.clone());
            continue;
        }
        let (name, inline) = match a.split_once('=') {
            Some((n, v)) if a.starts_with("--") => (n, Some(v.to_string())),
            _ => (a.as_str(), None),
        };
        let Some(f) = by_name.get(name) else {
            return Err(ArgError::Usage(format!("error: unknown argument: {name}\n{}", usage_line(prog, flags))));
        };
        let value = match (f.value, inline) {
            (None, None) => String::new(),
            (None, Some(_)) => return Err(ArgError::Usage(format!("error: {name} takes no value"))),
            (Some(_), Some(v)) => v,
            (Some(meta), None) => {
                let Some(v) = args.get(i) else {
                    return Err(ArgError::Usage(format!("error: {name} expects a value ({meta})")));
                };
                i += 1;
                v.clone()
            }
        };
        out.values.entry(f.names[0]).or_default().push(value);
    }
    Ok(out)
}

/// Parse, or print the help text and return `None` for `-h`/`--help`.
pub fn parse_or_help(prog: &str, about: &str, flags: &[Flag], args: &[String]) -> Result<Option<Parsed>, ArgError> {
    match parse(prog, flags, args) {
        Err(ArgError::Help) => {
            print!("{}", help_text(prog, about, flags));
            Ok(None)
        }
        r => r.map(Some),
    }
}

impl Parsed {
    pub fn has(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }

    /// The last value given for a flag.
    pub fn str(&self, name: &str) -> Option<&str> {
        self.values.get(name).and_then(|v| v.last()).map(String::as_str)
    }

    pub fn all(&self, name: &str) -> &[String] {
        self.values.get(name).map(Vec::as_slice).unwrap_or(&[])
    }

    pub fn get<T: FromStr>(&self, name: &str, default: T) -> Result<T, ArgError> {
        match self.str(name) {
            None => Ok(default),
            Some(v) => {
                v.parse().map_err(|_| ArgError::Usage(format!("error: invalid value '{v}' for {name} ({})", self.prog)))
            }
        }
    }

    pub fn opt<T: FromStr>(&self, name: &str) -> Result<Option<T>, ArgError> {
        self.str(name)
            .map(|v| v.parse().map_err(|_| ArgError::Usage(format!("error: invalid value '{v}' for {name}"))))
            .transpose()
    }

    pub fn required(&self, name: &str) -> Result<&str, ArgError> {
        self.str(name).ok_or_else(|| ArgError::Usage(format!("error: {name} is required ({})", self.prog)))
    }

    /// Comma-separated list values (llama-bench style `-p 128,512`), over all occurrences.
    pub fn list<T: FromStr + Clone>(&self, name: &str, default: &[T]) -> Result<Vec<T>, ArgError> {
        let vals = self.all(name);
        if vals.is_empty() {
            return Ok(default.to_vec());
        }
        vals.iter()
            .flat_map(|v| v.split(','))
            .map(|v| v.parse().map_err(|_| ArgError::Usage(format!("error: invalid value '{v}' for {name}"))))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLAGS: &[Flag] = &[
        flag(&["-m", "--model"], Some("FNAME"), "model"),
        flag(&["-ngl", "--gpu-layers"], Some("N"), "layers"),
        flag(&["-cnv", "--conversation"], None, "chat"),
    ];

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn llama_style_flags_and_aliases() {
        let p = parse("x", FLAGS, &s(&["-m", "a.gguf", "--gpu-layers=99", "-cnv"])).unwrap();
        assert_eq!(p.str("-m"), Some("a.gguf"));
        assert_eq!(p.get::<i32>("-ngl", 0).unwrap(), 99);
        assert!(p.has("-cnv"));
    }

    #[test]
    fn unknown_flag_is_rejected_with_usage() {
        let e = parse("llama-cli", FLAGS, &s(&["--bogus"])).unwrap_err().to_string();
        assert!(e.contains("unknown argument: --bogus") && e.contains("usage: llama-cli"), "{e}");
    }

    #[test]
    fn missing_value_is_an_error() {
        assert!(parse("x", FLAGS, &s(&["-m"])).is_err());
    }

    #[test]
    fn negative_numbers_are_values() {
        let p = parse("x", FLAGS, &s(&["-ngl", "-1"])).unwrap();
        assert_eq!(p.get::<i32>("-ngl", 0).unwrap(), -1);
    }
}
