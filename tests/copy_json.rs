//! `regrelay copy --output json` against real registries (issue 15): one JSON object per
//! verified image on stdout, for scripts.

mod support;

use support::{Registries, image, tag_digest};

#[tokio::test]
async fn copy_output_json_prints_one_object_per_verified_image_15() {
    support::registry_bin_or_skip!();
    let Registries { src, dst, s, d } = Registries::start().await;
    let img = image::push_simple(&s, "team/app", "1.0", 40_000, 154).await;
    let copy = || async {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_regrelay"))
            .args(["copy", "--output", "json"])
            .arg(format!("{}/team/app:1.0", src.host()))
            .arg(format!("{}/mirror/team/app", dst.host()))
            .env_clear()
            .output()
            .await
            .unwrap()
    };
    let out = copy().await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(v["source"], format!("{}/team/app:1.0", src.host()));
    assert_eq!(v["target"], format!("{}/mirror/team/app:1.0", dst.host()));
    assert_eq!(v["digest"], img.digest.to_string());
    assert_eq!(v["outcome"], "replicated");
    assert!(v["bytes"].as_u64().unwrap() >= 40_000, "{v}");
    assert!(v["blobs"]["uploaded"].as_u64().unwrap() >= 2, "{v}");
    assert!(v["seconds"].as_f64().unwrap() > 0.0, "{v}");
    assert_eq!(
        tag_digest(&d, "mirror/team/app", "1.0").await.as_deref(),
        Some(img.digest.to_string().as_str())
    );
    // Again: already present, nothing moved.
    let v: serde_json::Value = serde_json::from_slice(&copy().await.stdout).unwrap();
    assert_eq!(v["outcome"], "already_present");
    assert_eq!(v["bytes"], 0);
}
