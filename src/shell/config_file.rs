//! Reads the config file from disk, within a size cap, and hands its text to
//! [`crate::core::config::parse`].

use std::path::Path;

use crate::core::config::{parse, ConfigError, ConfigErrors};
use crate::core::model::desired::Desired;

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<Desired, ConfigErrors> {
    load_with_text(path).map(|(desired, _)| desired)
}

/// Reads the file once, and returns what that text parses to, with the text: a caller
/// that watches the file compares later reads with exactly what it parsed.
pub fn load_with_text(path: &Path) -> Result<(Desired, String), ConfigErrors> {
    let name = path.display().to_string();
    match read_text(path) {
        Ok(text) => parse(&text, &name).map(|d| (d, text)),
        Err(e) => {
            let message = match e.kind() {
                std::io::ErrorKind::FileTooLarge => e.to_string(),
                _ => format!("cannot read: {e}"),
            };
            Err(ConfigErrors { source_name: name, errors: vec![ConfigError { location: "file".into(), message }] })
        }
    }
}

/// The most a config file may hold. Ten thousand bindings, each with a suffix, take about 1.6 MB.
pub const MAX_FILE_BYTES: u64 = 16 << 20;

/// Reads a config file of at most [`MAX_FILE_BYTES`]: a larger one is refused (error kind
/// `FileTooLarge`) from its size before it is read, and a file that grows past the cap
/// while being read (or a device with no size) is cut off there and refused too.
pub fn read_text(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let too_large = || {
        std::io::Error::new(
            std::io::ErrorKind::FileTooLarge,
            format!("is larger than {} MiB, the most a config file may hold", MAX_FILE_BYTES >> 20),
        )
    };
    let file = std::fs::File::open(path)?;
    if file.metadata()?.len() > MAX_FILE_BYTES {
        return Err(too_large());
    }
    let mut text = String::new();
    file.take(MAX_FILE_BYTES + 1).read_to_string(&mut text)?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(too_large());
    }
    Ok(text)
}
