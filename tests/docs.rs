//! The README shows the examples CI runs (`docs/examples/`, run by `.ci/sdk-roundtrip`)
//! whole: an example changed in one place and not the other fails here.

use std::path::Path;

#[test]
fn every_example_ci_runs_is_shown_whole_in_the_readme() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let mut shown = 0;
    for entry in std::fs::read_dir(root.join("docs/examples")).unwrap() {
        let path = entry.unwrap().path();
        let example = std::fs::read_to_string(&path).unwrap();
        let language = match path.extension().and_then(|e| e.to_str()) {
            Some("sh") => "sh",
            Some("mjs") => "js",
            Some("py") => "python",
            Some("ts") => "ts",
            other => panic!(
                "{}: an example of an unknown kind ({other:?})",
                path.display()
            ),
        };
        let block = format!("```{language}\n{example}```\n");
        assert!(
            readme.contains(&block),
            "README.md does not show {} as it is; paste it whole into its ```{language} block",
            path.display()
        );
        let link = format!(
            "(docs/examples/{})",
            path.file_name().unwrap().to_str().unwrap()
        );
        assert!(readme.contains(&link), "README.md does not link {link}");
        shown += 1;
    }
    assert_eq!(shown, 4, "curl, fetch, Python and TypeScript");
}
