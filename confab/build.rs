//! Embeds the web client (`web/index.html`, `web/static/**`) into the binary, so
//! `confab dev` serves it with no build step and no files next to the executable.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("../web");
    println!(
        "cargo::rerun-if-changed={}",
        web.join("index.html").display()
    );
    println!("cargo::rerun-if-changed={}", web.join("static").display());
    let mut files = Vec::new();
    if web.join("index.html").is_file() {
        files.push(("/".to_owned(), web.join("index.html")));
    }
    collect(&web.join("static"), "/static", &mut files);
    files.sort();
    let mut code = String::from(
        "/// (URL path, content type, bytes) of every embedded web file.\npub static FILES: &[(&str, &str, &[u8])] = &[\n",
    );
    for (url, path) in &files {
        println!("cargo::rerun-if-changed={}", path.display());
        let path = path.canonicalize().expect("web file path");
        writeln!(
            code,
            "    ({url:?}, {:?}, include_bytes!({:?})),",
            content_type(&path),
            path.display().to_string()
        )
        .expect("write to string");
    }
    code.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("web_files.rs");
    std::fs::write(out, code).expect("write web_files.rs");
}

fn collect(dir: &Path, url: &str, files: &mut Vec<(String, PathBuf)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let child_url = format!("{url}/{name}");
        if path.is_dir() {
            println!("cargo::rerun-if-changed={}", path.display());
            collect(&path, &child_url, files);
        } else {
            files.push((child_url, path));
        }
    }
}

fn content_type(path: &Path) -> &'static str {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default()
    {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "json" => "application/json",
        "woff2" => "font/woff2",
        _ => "application/octet-stream",
    }
}
