use super::*;

fn props(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

fn sql_matches(expression: &str, tag: Option<&str>, pairs: &[(&str, &str)]) -> bool {
    Filter::sql(expression).unwrap_or_else(|e| panic!("{e}")).matches(tag, &props(pairs))
}

#[test]
fn tag_expressions_take_every_tag_they_name() {
    for all in ["", "*", "  *  "] {
        assert_eq!(Filter::tags(all), Ok(Filter::All));
    }
    let f = Filter::tags("TagA || TagB").unwrap();
    assert!(f.matches(Some("TagA"), &[]) && f.matches(Some("TagB"), &[]));
    assert!(!f.matches(Some("TagC"), &[]) && !f.matches(None, &[]));
    for bad in ["A||", "||B", "A||*", "A|| ||B"] {
        assert!(Filter::tags(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn comparisons_on_numbers_and_strings() {
    let m = [("amount", "150"), ("region", "eu"), ("ratio", "0.5")];
    let table: &[(&str, bool)] = &[
        ("amount > 100", true),
        ("amount >= 150", true),
        ("amount < 150", false),
        ("amount <= 150.0", true),
        ("amount = 150", true),
        ("amount = '150'", true),
        ("amount <> 150", false),
        ("amount != 151", true),
        ("ratio < 1", true),
        ("ratio > -1", true),
        ("region = 'eu'", true),
        ("region <> 'us'", true),
        ("region = 'EU'", false),
        ("region > 'a'", false),
        ("missing = 1", false),
        ("missing <> 1", false),
        ("TAGS = 'TagA'", true),
        ("tags = 'TagB'", false),
    ];
    for (e, want) in table {
        assert_eq!(sql_matches(e, Some("TagA"), &m), *want, "{e}");
    }
}

#[test]
fn between_in_and_null() {
    let m = [("amount", "150"), ("region", "eu")];
    let table: &[(&str, bool)] = &[
        ("amount BETWEEN 100 AND 200", true),
        ("amount between 151 and 200", false),
        ("amount NOT BETWEEN 151 AND 200", true),
        ("region BETWEEN 1 AND 2", false),
        ("region IN ('us', 'eu')", true),
        ("region NOT IN ('us', 'eu')", false),
        ("amount IN (100, 150)", true),
        ("missing IN ('a')", false),
        ("missing NOT IN ('a')", false),
        ("missing IS NULL", true),
        ("region IS NULL", false),
        ("region IS NOT NULL", true),
    ];
    for (e, want) in table {
        assert_eq!(sql_matches(e, None, &m), *want, "{e}");
    }
}

#[test]
fn logic_is_three_valued_and_only_true_matches() {
    let m = [("a", "1"), ("b", "2")];
    let table: &[(&str, bool)] = &[
        ("a = 1 AND b = 2", true),
        ("a = 1 AND b = 3", false),
        ("a = 2 OR b = 2", true),
        ("NOT a = 2", true),
        ("NOT (a = 1 AND b = 2)", false),
        // Unknown (a missing property) is not true, and NOT unknown is unknown.
        ("missing = 1", false),
        ("NOT missing = 1", false),
        ("missing = 1 OR a = 1", true),
        ("missing = 1 AND a = 1", false),
        ("NOT (missing = 1 AND a = 2)", true),
        ("TRUE", true),
        ("FALSE OR (a > 0 AND (b > 1 OR missing IS NULL))", true),
        ("a = 1 and b = 2 or a = 5", true),
    ];
    for (e, want) in table {
        assert_eq!(sql_matches(e, None, &m), *want, "{e}");
    }
}

#[test]
fn constants_and_keywords_parse() {
    assert!(sql_matches("name = 'it''s'", None, &[("name", "it's")]));
    assert!(sql_matches("x = -1.5", None, &[("x", "-1.5")]));
    assert!(sql_matches("x.y-z = 'ok'", None, &[("x.y-z", "ok")]));
    assert!(sql_matches("x is not null and x in ('1')", None, &[("x", "1")]));
}

#[test]
fn bad_expressions_are_refused_with_a_reason() {
    let bad = [
        "",
        "a =",
        "= 1",
        "a = 1 AND",
        "(a = 1",
        "a = 1)",
        "a IS 1",
        "a NOT = 1",
        "a BETWEEN 1",
        "a IN 1",
        "a IN ('x'",
        "name = 'open",
        "a # 1",
        "a = 1 b = 2",
        "AND = 1",
    ];
    for e in bad {
        let err = Filter::sql(e).expect_err(e);
        assert!(!err.reason.is_empty(), "{e}");
    }
    let deep = format!("{}a = 1{}", "(".repeat(100), ")".repeat(100));
    assert!(Filter::sql(&deep).unwrap_err().reason.contains("nested"));
    let at_limit = format!("a = '{}'", "x".repeat(EXPRESSION_BYTES_MAX - 6));
    assert_eq!(at_limit.len(), EXPRESSION_BYTES_MAX);
    assert!(Filter::sql(&at_limit).is_ok());
    let over = format!("a = '{}'", "x".repeat(EXPRESSION_BYTES_MAX - 5));
    assert!(Filter::sql(&over).unwrap_err().reason.contains("over the limit"));
}
