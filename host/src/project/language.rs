use std::fmt;
use std::path::Path;

use super::ProjectError;

/// A language a handler can be written in, with the file that marks a
/// folder as holding one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Language {
    Rust,
    Python,
    #[value(name = "js", alias = "javascript")]
    JavaScript,
}

impl Language {
    /// The file a handler of this language starts from.
    pub fn handler_file(self) -> &'static str {
        match self {
            Language::Rust => "src/lib.rs",
            Language::Python => "handler.py",
            Language::JavaScript => "handler.js",
        }
    }

    /// Files whose presence says a folder holds a handler in this language.
    fn markers(self) -> &'static [&'static str] {
        match self {
            Language::Rust => &["Cargo.toml"],
            Language::Python => &["pyproject.toml", "handler.py"],
            Language::JavaScript => &["package.json", "handler.js"],
        }
    }

    /// The language of the handler in `dir`, told by its marker files; a
    /// folder with markers of several languages needs to be told which.
    pub fn detect(dir: &Path) -> Result<Language, ProjectError> {
        if !dir.is_dir() {
            return Err(ProjectError::NotAFolder { dir: dir.to_owned() });
        }
        let found: Vec<(Language, &str)> = [Language::Rust, Language::Python, Language::JavaScript]
            .into_iter()
            .filter_map(|language| {
                let marker = language.markers().iter().find(|marker| dir.join(marker).is_file())?;
                Some((language, *marker))
            })
            .collect();
        match found.as_slice() {
            [] => Err(ProjectError::NoHandler { dir: dir.to_owned() }),
            [(language, _)] => Ok(*language),
            several => Err(ProjectError::SeveralLanguages {
                dir: dir.to_owned(),
                found: several
                    .iter()
                    .map(|(language, marker)| format!("{language}: {marker}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }
}

impl fmt::Display for Language {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Language::Rust => "Rust",
            Language::Python => "Python",
            Language::JavaScript => "JavaScript",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder_with(files: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for file in files {
            std::fs::write(dir.path().join(file), "").unwrap();
        }
        dir
    }

    #[test]
    fn each_language_is_told_by_its_marker() {
        assert_eq!(
            Language::detect(folder_with(&["Cargo.toml"]).path()).unwrap(),
            Language::Rust
        );
        assert_eq!(
            Language::detect(folder_with(&["handler.py"]).path()).unwrap(),
            Language::Python
        );
        assert_eq!(
            Language::detect(folder_with(&["pyproject.toml"]).path()).unwrap(),
            Language::Python
        );
        assert_eq!(
            Language::detect(folder_with(&["package.json", "handler.js"]).path()).unwrap(),
            Language::JavaScript
        );
    }

    #[test]
    fn a_folder_without_a_handler_says_how_to_make_one() {
        let error = Language::detect(folder_with(&["notes.txt"]).path()).unwrap_err();
        assert!(matches!(error, ProjectError::NoHandler { .. }));
        assert!(error.to_string().contains("sluice new"), "{error}");
    }

    #[test]
    fn markers_of_two_languages_ask_for_one() {
        let error = Language::detect(folder_with(&["Cargo.toml", "handler.js"]).path()).unwrap_err();
        assert!(
            error.to_string().contains("Rust: Cargo.toml, JavaScript: handler.js"),
            "{error}"
        );
        assert!(error.to_string().contains("--lang"), "{error}");
    }
}
