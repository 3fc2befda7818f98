//! Which toolchain built a module, read from its `producers` sections, for
//! the status: a module in a language that carries its own runtime costs
//! seconds to compile and tens of MiB to run, and the status should say so.

/// The language and tool that built `bytes`, e.g. `Rust (rustc 1.95.0)`,
/// `JavaScript (ComponentizeJS 0.23.0)`, `Python (componentize-py, CPython 3.14)`,
/// if its producers sections say.
pub fn toolchain(bytes: &[u8]) -> Option<String> {
    let mut language: Option<String> = None;
    let mut processed_by: Vec<(String, String)> = Vec::new();
    let mut python: Option<String> = None;
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        let Ok(wasmparser::Payload::CustomSection(section)) = payload else { continue };
        let producers = match section.as_known() {
            wasmparser::KnownCustom::Producers(producers) => producers,
            // componentize-py leaves no producers of its own, but links
            // CPython in as a core module named after it (`libpython3.14.so`).
            wasmparser::KnownCustom::ComponentName(names) => {
                python = python.or_else(|| cpython_in(names));
                continue;
            }
            _ => continue,
        };
        for field in producers.into_iter().flatten() {
            for value in field.values.into_iter().flatten() {
                match field.name {
                    // The first language named is the outermost module's.
                    "language" if language.is_none() => language = Some(value.name.to_owned()),
                    "processed-by" => processed_by.push((value.name.to_owned(), value.version.to_owned())),
                    _ => {}
                }
            }
        }
    }
    let tool = |name: &str| processed_by.iter().find(|(tool, _)| tool.eq_ignore_ascii_case(name));
    // The runtimes' own parts are C and Rust: the tool that embedded them names the language.
    if let Some((tool, version)) = tool("ComponentizeJS") {
        return Some(format!("JavaScript ({tool} {version})"));
    }
    if let Some(cpython) = python {
        return Some(format!("Python (componentize-py, CPython {cpython})"));
    }
    let language = language?;
    match tool("rustc").filter(|_| language == "Rust") {
        Some((_, version)) => Some(format!("Rust (rustc {})", version.split(' ').next().unwrap_or(version))),
        None => Some(language),
    }
}

/// The CPython version a component links in, from its core modules' names.
fn cpython_in(names: wasmparser::ComponentNameSectionReader<'_>) -> Option<String> {
    names.into_iter().flatten().find_map(|subsection| {
        let wasmparser::ComponentName::CoreModules(modules) = subsection else { return None };
        modules.into_iter().flatten().find_map(|naming| {
            let version = naming.name.strip_prefix("libpython")?.strip_suffix(".so")?;
            Some(version.to_owned())
        })
    })
}
