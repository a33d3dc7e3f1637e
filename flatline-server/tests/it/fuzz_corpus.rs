//! Runs every committed fuzz input (`fuzz/corpus/<target>/*`: seeds and regression inputs of past crashes)
//! through the fuzz target bodies on stable, so CI checks them without nightly or cargo-fuzz.

use std::path::{Path, PathBuf};

use flatline_server::fuzzing::{TARGETS, seeds};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus")
}

#[test]
fn every_target_has_a_committed_corpus_and_every_input_passes() {
    let mut total = 0;
    for (name, body) in TARGETS {
        let dir = corpus_dir().join(name);
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
            .map(|e| e.expect("dir entry").path())
            .filter(|p| p.is_file())
            .collect::<Vec<_>>();
        assert!(entries.len() >= 3, "{name}: too few corpus inputs");
        for path in entries {
            let data = std::fs::read(&path).expect("read corpus input");
            // A panic names the input so it can be replayed with `cargo fuzz run <target> <file>`.
            let result = std::panic::catch_unwind(|| body(&data));
            assert!(result.is_ok(), "{name}: input {} failed", path.display());
            total += 1;
        }
    }
    assert!(total >= TARGETS.len() * 3);
}

#[test]
fn generated_seeds_pass_and_are_committed() {
    let seeds = seeds();
    for (name, _) in TARGETS {
        assert!(
            seeds.iter().filter(|(t, _, _)| t == name).count() >= 3,
            "{name}: too few seeds"
        );
    }
    for (target, file, data) in &seeds {
        let (_, body) = TARGETS
            .iter()
            .find(|(n, _)| n == target)
            .expect("seed for a known target");
        body(data);
        let committed = std::fs::read(corpus_dir().join(target).join(file))
            .unwrap_or_else(|e| panic!("{target}/{file} is not committed ({e}); run write_seeds"));
        assert_eq!(
            &committed, data,
            "{target}/{file} differs from the generator"
        );
    }
}

/// Regenerates the seed files: `cargo test -p flatline-server --test it fuzz_corpus::write_seeds -- --ignored`.
#[test]
#[ignore = "writes into the source tree"]
fn write_seeds() {
    for (target, file, data) in seeds() {
        let dir = corpus_dir().join(target);
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join(file), data).expect("write seed");
    }
}
