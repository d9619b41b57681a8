//! `require` on rules (issue 14): names of `[gates.NAME]` the target digest must pass
//! before a target tag is written; an unknown name is an error with its line and field.

use super::{BASE, expect, ok, render};

/// BASE with `require` on its rule and an exec gate `smoke` plus `gate_tables`.
fn with_require(require: &str, gate_tables: &str) -> String {
    BASE.replace(
        "repository = \"**\"\n",
        &format!("repository = \"**\"\nrequire = {require}\n"),
    ) + &format!("\n[gates.smoke]\nkind = \"exec\"\nargv = [\"true\"]\n{gate_tables}")
}

#[test]
fn absent_means_no_gates_and_known_names_are_kept_in_order_once() {
    assert!(ok(BASE).rules[0].require.is_empty());
    let c = ok(&with_require(
        "[\"smoke\", \"other\", \"smoke\"]",
        "[gates.other]\nkind = \"exec\"\nargv = [\"true\"]\n",
    ));
    assert_eq!(c.rules[0].require, ["smoke", "other"]);
}

#[test]
fn an_unknown_gate_is_an_error_naming_the_line_and_the_field() {
    let text = with_require("[\"smoke\",\n  \"nope\"]", "");
    let e = expect(&text, "\"nope\"", "rules[0].require[1]", "unknown gate \"nope\"");
    assert!(e.message.contains("[gates.nope]"), "{e}");
    // Without any [gates] table at all.
    let text = BASE.replace("repository = \"**\"\n", "repository = \"**\"\nrequire = [\"smoke\"]\n");
    expect(&text, "[\"smoke\"]", "rules[0].require[0]", "unknown gate \"smoke\"");
}

#[test]
fn require_is_rendered_and_reloads() {
    let out = render(&ok(&with_require("[\"smoke\"]", "")));
    assert!(out.contains("require = [\"smoke\"]"), "{out}");
    assert_eq!(ok(&out).rules[0].require, ["smoke"]);
    assert!(!render(&ok(BASE)).contains("require"));
}
