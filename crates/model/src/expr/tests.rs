//! Data-driven tests. Every expected error message here was observed on DynamoDB Local 3.3.0
//! unless the case says otherwise; evaluation results likewise.

use serde_json::{Value as Json, json};

use super::*;
use crate::value::{AttributeValue, Item, item_from_json, item_to_json};

/// The values a test expression may use; each test request carries only those it mentions.
fn standard_values() -> serde_json::Map<String, Json> {
    json!({
        ":n": {"N": "1"}, ":n2": {"N": "2"}, ":n5": {"N": "5"}, ":n10": {"N": "10"}, ":zero": {"N": "0"},
        ":s": {"S": "x"}, ":a": {"S": "a"}, ":he": {"S": "hé"}, ":e": {"S": ""}, ":T": {"S": "S"}, ":ll": {"S": "ll"},
        ":b": {"B": "AAE="}, ":b0": {"B": "AA=="}, ":b1": {"B": "AQ=="},
        ":ss": {"SS": ["a", "b"]}, ":ssa": {"SS": ["a"]}, ":ssc": {"SS": ["c"]}, ":ns": {"NS": ["1", "2"]},
        ":ns7": {"NS": ["7"]}, ":bs": {"BS": ["AA=="]},
        ":l": {"L": [{"S": "z"}]}, ":l0": {"L": []}, ":m": {"M": {}}, ":nu": {"NULL": true}, ":t": {"BOOL": true},
        ":big": {"N": "99999999999999999999999999999999999999"}
    })
    .as_object()
    .unwrap()
    .clone()
}

fn standard_names() -> serde_json::Map<String, Json> {
    json!({"#a": "a", "#b": "b", "#s": "status", "#n": "n", "#dot": "a.b"}).as_object().unwrap().clone()
}

/// The placeholders (`:x`, `#x`) that appear in `texts`.
fn mentioned(texts: &[&str], sigil: char) -> Vec<String> {
    let mut found = Vec::new();
    for text in texts {
        let mut chars = text.char_indices().peekable();
        while let Some((start, character)) = chars.next() {
            if character == sigil {
                let mut end = start + 1;
                while let Some((position, next)) = chars.peek().copied() {
                    if next.is_ascii_alphanumeric() || next == '_' {
                        end = position + next.len_utf8();
                        chars.next();
                    } else {
                        break;
                    }
                }
                found.push(text[start..end].to_string());
            }
        }
    }
    found
}

/// Resolves with placeholder maps holding exactly the standard placeholders the texts mention.
fn resolve_texts<'t>(
    operation: Operation,
    set: impl FnOnce(&mut RequestExpressions<'t>),
) -> Result<ResolvedExpressions, String> {
    let mut texts = RequestExpressions::new(operation);
    set(&mut texts);
    // Covariance lets the copy borrow the local maps for a shorter lifetime.
    let mut request: RequestExpressions<'_> = texts;
    let texts: Vec<&str> =
        [request.condition, request.filter, request.key_condition, request.update, request.projection]
            .into_iter()
            .flatten()
            .collect();
    let all_values = standard_values();
    let values: serde_json::Map<String, Json> = mentioned(&texts, ':')
        .into_iter()
        .filter_map(|key| all_values.get(&key).map(|value| (key, value.clone())))
        .collect();
    let all_names = standard_names();
    let names: serde_json::Map<String, Json> = mentioned(&texts, '#')
        .into_iter()
        .filter_map(|key| all_names.get(&key).map(|value| (key, value.clone())))
        .collect();
    if !values.is_empty() {
        request.values = Some(&values);
    }
    if !names.is_empty() {
        request.names = Some(&names);
    }
    request.resolve().map_err(|error| error.message)
}

fn condition(text: &str) -> Result<Condition, String> {
    resolve_texts(Operation::PutItem, |request| request.condition = Some(text))
        .map(|resolved| resolved.condition.unwrap())
}

fn update(text: &str) -> Result<Update, String> {
    resolve_texts(Operation::UpdateItem, |request| request.update = Some(text)).map(|resolved| resolved.update.unwrap())
}

fn projection(text: &str) -> Result<Projection, String> {
    resolve_texts(Operation::GetItem, |request| request.projection = Some(text))
        .map(|resolved| resolved.projection.unwrap())
}

fn check_errors(kind: &str, cases: &[(&str, &str)], parse: impl Fn(&str) -> Result<(), String>) {
    let mut failures = Vec::new();
    for (text, expected) in cases {
        let expected = match expected.strip_prefix('!') {
            Some(raw) => raw.to_string(),
            None => format!("Invalid {kind}: {expected}"),
        };
        match parse(text) {
            Err(message) if message == expected => {}
            other => failures.push(format!("{text:?}\n   expected: {expected}\n   got:      {other:?}")),
        }
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn condition_syntax_errors() {
    check_errors(
        "ConditionExpression",
        &[
            ("a x", r#"Syntax error; token: "x", near: "a x""#),
            ("a = :n x", r#"Syntax error; token: "x", near: ":n x""#),
            ("a = = :n", r#"Syntax error; token: "=", near: "= = :n""#),
            ("a =", r#"Syntax error; token: "<EOF>", near: "=""#),
            ("a = ", r#"Syntax error; token: "<EOF>", near: "= ""#),
            ("", "The expression can not be empty;"),
            (" ", r#"Syntax error; token: "<EOF>", near: " ""#),
            ("(a = :n", r#"Syntax error; token: "<EOF>", near: ":n""#),
            ("a = :n)", r#"Syntax error; token: ")", near: ":n)""#),
            ("a.b.c = :n and", r#"Syntax error; token: "<EOF>", near: "and""#),
            ("a = :n and b = :n or c x y z", r#"Syntax error; token: "x", near: "c x y""#),
            ("attribute_exists(a", r#"Syntax error; token: "<EOF>", near: "a""#),
            ("a[1 = :n", r#"Syntax error; token: "=", near: "1 = :n""#),
            ("a[-1] = :n", r#"Syntax error; token: "-", near: "[-1""#),
            ("a[x] = :n", r#"Syntax error; token: "x", near: "[x]""#),
            ("a.1 = :n", r#"Syntax error; token: "1", near: ".1 =""#),
            ("a..b = :n", r#"Syntax error; token: ".", near: "..b""#),
            ("a = :n AND AND b = :n", r#"Syntax error; token: "AND", near: "AND AND b""#),
            ("a = 'x'", r#"Syntax error; token: "'", near: "= 'x""#),
            ("a = 1", r#"Syntax error; token: "1", near: "= 1""#),
            ("a = :n   x", r#"Syntax error; token: "x", near: ":n   x""#),
            ("#", r##"Syntax error; token: "#", near: "#""##),
            ("a = :", r#"Syntax error; token: ":", near: "= :""#),
            ("a $ b", r#"Syntax error; token: "$", near: "a $ b""#),
            ("a-b = :n", r#"Syntax error; token: "-", near: "a-b""#),
            ("1a = :n", r#"Syntax error; token: "1", near: "1a""#),
            ("a < :n < :n2", r#"Syntax error; token: "<", near: ":n < :n2""#),
            ("a BETWEEN :n", r#"Syntax error; token: "<EOF>", near: ":n""#),
            ("a IN ()", r#"Syntax error; token: ")", near: "()""#),
            ("a IN :n", r#"Syntax error; token: ":n", near: "IN :n""#),
            ("attribute_not_exists()", r#"Syntax error; token: ")", near: "()""#),
            ("a = :n + :n", r#"Syntax error; token: "+", near: ":n + :n""#),
            ("a[00] = :n", r#"Syntax error; token: "0", near: "00]""#),
            ("a[01] = :n", r#"Syntax error; token: "1", near: "01]""#),
            ("foo(a) AND x(", r#"Syntax error; token: "<EOF>", near: "(""#),
            ("status x", r#"Syntax error; token: "x", near: "status x""#),
            ("a = :n AND a x", r#"Syntax error; token: "x", near: "a x""#),
        ],
        |text| condition(text).map(|_| ()),
    );
}

#[test]
fn condition_semantic_errors() {
    check_errors(
        "ConditionExpression",
        &[
            ("foo(a)", "Invalid function name; function: foo"),
            ("Size(a) = :n", "Invalid function name; function: Size"),
            ("size(a)", "The function is not allowed to be used this way in an expression; function: size"),
            (
                "attribute_exists(a) = :n",
                "The function is not allowed to be used this way in an expression; function: attribute_exists",
            ),
            (
                "a = attribute_exists(a)",
                "The function is not allowed to be used this way in an expression; function: attribute_exists",
            ),
            (
                "if_not_exists(a, :n) = :n",
                "The function is not allowed in a condition expression; function: if_not_exists",
            ),
            ("list_append(a, :l) = :n", "The function is not allowed in a condition expression; function: list_append"),
            (
                "attribute_exists(:n)",
                "Operator or function requires a document path; operator or function: attribute_exists",
            ),
            (
                "attribute_exists(size(a))",
                "Operator or function requires a document path; operator or function: attribute_exists",
            ),
            (
                "begins_with(a)",
                "Incorrect number of operands for operator or function; operator or function: begins_with, number of operands: 1",
            ),
            (
                "begins_with(a, :n, :s)",
                "Incorrect number of operands for operator or function; operator or function: begins_with, number of operands: 3",
            ),
            (
                "size(a, b) = :n",
                "Incorrect number of operands for operator or function; operator or function: size, number of operands: 2",
            ),
            (
                "attribute_exists(a, b)",
                "Incorrect number of operands for operator or function; operator or function: attribute_exists, number of operands: 2",
            ),
            (
                "begins_with(a, :n)",
                "Incorrect operand type for operator or function; operator or function: begins_with, operand type: N",
            ),
            (
                "begins_with(a, :l)",
                "Incorrect operand type for operator or function; operator or function: begins_with, operand type: L",
            ),
            (
                "begins_with(a, :ss)",
                "Incorrect operand type for operator or function; operator or function: begins_with, operand type: SS",
            ),
            (
                "begins_with(:n, a)",
                "Incorrect operand type for operator or function; operator or function: begins_with, operand type: N",
            ),
            (
                "begins_with(a, size(b))",
                "Incorrect operand type for operator or function; operator or function: begins_with, operand type: N",
            ),
            (
                "attribute_type(a, :n)",
                "Incorrect operand type for operator or function; operator or function: attribute_type, operand type: N",
            ),
            (
                "attribute_type(a, :nu)",
                "Incorrect operand type for operator or function; operator or function: attribute_type, operand type: NULL",
            ),
            (
                "attribute_type(a, :s)",
                "Invalid attribute type name found; type: x, valid types: {N,BS,L,B,NULL,M,S,SS,NS,BOOL}",
            ),
            (
                "attribute_type(a, b)",
                "Incorrect operand type for operator or function; operator or function: attribute_type, operand type: {M,BOOL,DICT,S,L,HD,HDS,INTSET,DECIMAL,B,DOUBLESET,BS,DECIMALSET,SS,NS,INT,N,FLOAT,DOUBLE,NULL,FS}",
            ),
            (
                "size(:n) = :n",
                "Incorrect operand type for operator or function; operator or function: size, operand type: N",
            ),
            (
                "size(size(a)) = :n",
                "Incorrect operand type for operator or function; operator or function: size, operand type: N",
            ),
            ("a < :ss", "Incorrect operand type for operator or function; operator or function: <, operand type: SS"),
            ("a < :l", "Incorrect operand type for operator or function; operator or function: <, operand type: L"),
            (
                "a >= :t",
                "Incorrect operand type for operator or function; operator or function: >=, operand type: BOOL",
            ),
            ("a > :nu", "Incorrect operand type for operator or function; operator or function: >, operand type: NULL"),
            ("a <= :m", "Incorrect operand type for operator or function; operator or function: <=, operand type: M"),
            (
                "a BETWEEN :ss AND :ss",
                "Incorrect operand type for operator or function; operator or function: BETWEEN, operand type: SS",
            ),
            (
                "a BETWEEN :n AND :s",
                "The BETWEEN operator requires same data type for lower and upper bounds; lower bound operand: AttributeValue: {N:1}, upper bound operand: AttributeValue: {S:x}",
            ),
            (
                "a BETWEEN :b AND :s",
                "The BETWEEN operator requires same data type for lower and upper bounds; lower bound operand: AttributeValue: {B:java.nio.HeapByteBuffer[pos=0 lim=2 cap=2]}, upper bound operand: AttributeValue: {S:x}",
            ),
            (
                "a BETWEEN :n2 AND :n",
                "The BETWEEN operator requires upper bound to be greater than or equal to lower bound; lower bound operand: AttributeValue: {N:2}, upper bound operand: AttributeValue: {N:1}",
            ),
            (
                "a < a",
                "The first operand must be distinct from the remaining operands for this operator or function; operator: <, first operand: [a]",
            ),
            (
                "a = a",
                "The first operand must be distinct from the remaining operands for this operator or function; operator: =, first operand: [a]",
            ),
            (
                "a.b = a.b",
                "The first operand must be distinct from the remaining operands for this operator or function; operator: =, first operand: [a, b]",
            ),
            (
                "a[0] < a[0]",
                "The first operand must be distinct from the remaining operands for this operator or function; operator: <, first operand: [a, [0]]",
            ),
            (
                "#a < a",
                "The first operand must be distinct from the remaining operands for this operator or function; operator: <, first operand: [a]",
            ),
            (
                "a BETWEEN :n AND a",
                "The first operand must be distinct from the remaining operands for this operator or function; operator: BETWEEN, first operand: [a]",
            ),
            (
                "a IN (:n, a)",
                "The first operand must be distinct from the remaining operands for this operator or function; operator: IN, first operand: [a]",
            ),
            (
                "begins_with(a, a)",
                "The first operand must be distinct from the remaining operands for this operator or function; operator: begins_with, first operand: [a]",
            ),
            (
                "contains(a, a)",
                "The first operand must be distinct from the remaining operands for this operator or function; operator: contains, first operand: [a]",
            ),
            ("status = :n", "Attribute name is a reserved keyword; reserved keyword: status"),
            ("a.Status = :n", "Attribute name is a reserved keyword; reserved keyword: Status"),
            ("a = :zz", "An expression attribute value used in expression is not defined; attribute value: :zz"),
            (
                "a = :n AND b = #x",
                "An expression attribute name used in the document path is not defined; attribute name: #x",
            ),
            ("((a = :n))", "The expression has redundant parentheses;"),
            ("NOT ((a = :n))", "The expression has redundant parentheses;"),
            ("a = ((:n))", "The expression has redundant parentheses;"),
            ("a[2147483648] = :n", "List index is not within the allowable range; index: [2147483648]"),
            (
                "a[1000000000000000000000] = :n",
                "List index is not within the allowable range; index: [1000000000000000000000]",
            ),
            // Order between errors of different stages.
            ("status = :n AND foo(a)", "Attribute name is a reserved keyword; reserved keyword: status"),
            ("foo(a) AND status = :n", "Invalid function name; function: foo"),
            ("a = :zz AND foo(a)", "Invalid function name; function: foo"),
            ("#zz = :n AND status = :n", "Attribute name is a reserved keyword; reserved keyword: status"),
            (
                "begins_with(a) AND b = :zz",
                "Incorrect number of operands for operator or function; operator or function: begins_with, number of operands: 1",
            ),
            (
                "b = :zz AND begins_with(a)",
                "An expression attribute value used in expression is not defined; attribute value: :zz",
            ),
            (
                "size(a) AND begins_with(a)",
                "The function is not allowed to be used this way in an expression; function: size",
            ),
            (
                "begins_with(a) AND size(a)",
                "The function is not allowed to be used this way in an expression; function: size",
            ),
            (
                "if_not_exists(a, :n) AND status = :n",
                "The function is not allowed in a condition expression; function: if_not_exists",
            ),
            ("status = :n AND size(a)", "Attribute name is a reserved keyword; reserved keyword: status"),
            (
                "a < a AND attribute_exists(:n)",
                "The first operand must be distinct from the remaining operands for this operator or function; operator: <, first operand: [a]",
            ),
            (
                "attribute_exists(:n) AND a < a",
                "Operator or function requires a document path; operator or function: attribute_exists",
            ),
            (
                "begins_with(#zz)",
                "An expression attribute name used in the document path is not defined; attribute name: #zz",
            ),
            ("((a = :n)) AND foo(a)", "The expression has redundant parentheses;"),
            ("foo(a) AND ((a = :n))", "The expression has redundant parentheses;"),
            ("b = :zz AND a[5000000000] = :n", "List index is not within the allowable range; index: [5000000000]"),
        ],
        |text| condition(text).map(|_| ()),
    );
}

#[test]
fn limits() {
    let too_long = format!("{}a = :n", "a = :n AND ".repeat(400));
    let too_many = vec!["a = :n"; 300].join(" OR ");
    let in_list = |count: usize| format!("a IN ({})", vec![":n"; count].join(","));
    let deep_path = |count: usize| format!("a{} = :n", ".b".repeat(count - 1));
    let nots = format!("{}a = :n", "NOT ".repeat(1000));
    let parens = format!("{}a = :n{}", "(".repeat(1000), ")".repeat(1000));
    check_errors(
        "ConditionExpression",
        &[
            (&too_long, "Expression size has exceeded the maximum allowed size; expression size: 4406"),
            (&too_many, "The expression contains too many operators; operator count: 301"),
            (&in_list(101), "The IN operator is provided with too many operands; number of operands: 101"),
            (&deep_path(33), "The document path has too many nesting levels; nesting levels: 33"),
            (&nots, "The expression contains too many operators; operator count: 301"),
            (&parens, "The expression has redundant parentheses;"),
        ],
        |text| condition(text).map(|_| ()),
    );
    assert!(condition(&in_list(100)).is_ok());
    assert!(condition(&deep_path(32)).is_ok());
}

#[test]
fn placeholder_map_errors() {
    let run = |names: Json, values: Json, text: &str| {
        let names = names.as_object().cloned();
        let values = values.as_object().cloned();
        let mut request = RequestExpressions::new(Operation::UpdateItem);
        request.update = Some(text);
        request.names = names.as_ref();
        request.values = values.as_ref();
        request.resolve().map(|_| ()).map_err(|error| error.message)
    };
    let cases = [
        (json!({}), json!({":v": {"N": "1"}}), "SET a = :v", "ExpressionAttributeNames must not be empty"),
        (json!(null), json!({}), "SET a = :v", "ExpressionAttributeValues must not be empty"),
        (
            json!({"#a": "x"}),
            json!({":v": {"N": "1"}, ":zz": {"N": "1"}}),
            "SET a = :v",
            "Value provided in ExpressionAttributeNames unused in expressions: keys: {#a}",
        ),
        (
            json!(null),
            json!({":v": {"N": "1"}, ":zz": {"N": "1"}}),
            "SET a = :v",
            "Value provided in ExpressionAttributeValues unused in expressions: keys: {:zz}",
        ),
        (
            json!(null),
            json!({":v": {"N": "abc"}}),
            "SET a = :v",
            "ExpressionAttributeValues contains invalid value: A value provided cannot be converted into a number for key :v",
        ),
        (
            json!(null),
            json!({":v": {}}),
            "SET a = :v",
            "ExpressionAttributeValues contains invalid value: Supplied AttributeValue is empty, must contain exactly one of the supported datatypes for key :v",
        ),
        (
            json!(null),
            json!({":v": {"SS": []}}),
            "SET a = :v",
            "ExpressionAttributeValues contains invalid value: One or more parameter values were invalid: An string set  may not be empty for key :v",
        ),
        (
            json!(null),
            json!({":v": {"N": "1e999"}}),
            "SET a = :v",
            "ExpressionAttributeValues contains invalid value: Number overflow. Attempting to store a number with magnitude larger than supported range for key :v",
        ),
        (
            json!({"#a": ""}),
            json!({":v": {"N": "1"}}),
            "SET a = :v",
            "ExpressionAttributeNames contains invalid value: Empty attribute name for key #a",
        ),
        (
            json!({"a": "x"}),
            json!({":v": {"N": "1"}}),
            "SET a = :v",
            "ExpressionAttributeNames contains invalid key: Syntax error; key: \"a\"",
        ),
        (
            json!(null),
            json!({"v": {"N": "1"}}),
            "SET a = :v",
            "ExpressionAttributeValues contains invalid key: Syntax error; key: \"v\"",
        ),
        (
            json!({"#a": ""}),
            json!({":v": {"N": "x"}}),
            "SET a = :v",
            "ExpressionAttributeNames contains invalid value: Empty attribute name for key #a",
        ),
        (
            json!(null),
            json!({":v": {"N": "x"}}),
            "a x",
            "ExpressionAttributeValues contains invalid value: A value provided cannot be converted into a number for key :v",
        ),
    ];
    for (names, values, text, expected) in cases {
        assert_eq!(run(names, values, text), Err(expected.to_string()), "{text}");
    }
}

#[test]
fn unused_keys_are_listed_in_java_hash_set_order() {
    use super::resolve::java_hash_set_order;
    // Observed: values given in the order :v, :s, :t, :l, :ss, with :v used.
    assert_eq!(java_hash_set_order(&[":s", ":t", ":l", ":ss"]), vec![":l", ":s", ":t", ":ss"]);
    assert_eq!(
        java_hash_set_order(&[":nu", ":l", ":m", ":bo", ":b", ":s", ":ss", ":bs", ":v", ":w", ":ns"]),
        vec![":nu", ":l", ":m", ":bo", ":b", ":s", ":ss", ":bs", ":v", ":w", ":ns"]
    );
}

#[test]
fn expressions_are_checked_in_dynamodb_order() {
    let both = |update_text: &'static str, condition_text: &'static str| {
        resolve_texts(Operation::UpdateItem, |request| {
            request.update = Some(update_text);
            request.condition = Some(condition_text);
        })
        .map(|_| ())
    };
    assert_eq!(
        both("SET a = :n x", "a x"),
        Err(r#"Invalid UpdateExpression: Syntax error; token: "x", near: ":n x""#.into())
    );
    assert_eq!(
        both("SET #zz = :n", "status = :n"),
        Err("Invalid UpdateExpression: An expression attribute name used in the document path is not defined; attribute name: #zz".into())
    );
    let query = |key: &'static str, filter: Option<&'static str>, projection: Option<&'static str>| {
        resolve_texts(Operation::Query, |request| {
            request.key_condition = Some(key);
            request.filter = filter;
            request.projection = projection;
        })
        .map(|_| ())
    };
    assert_eq!(
        query("pk x", Some("a x"), None),
        Err(r#"Invalid FilterExpression: Syntax error; token: "x", near: "a x""#.into())
    );
    assert_eq!(
        query("pk x", None, Some("a x")),
        Err(r#"Invalid ProjectionExpression: Syntax error; token: "x", near: "a x""#.into())
    );
    assert_eq!(
        query("pk = :s", Some("a = :n"), Some("a x")),
        Err(r#"Invalid ProjectionExpression: Syntax error; token: "x", near: "a x""#.into())
    );
}

#[test]
fn condition_parse_shapes() {
    let path = |name: &str| Operand::Path(Path::attribute(name));
    let value = |json: Json| Operand::Value(AttributeValue::from_json(&json).unwrap());
    let compare = |name: &str| Condition::Compare(Comparator::Equal, path(name), value(json!({"N": "1"})));
    // AND binds tighter than OR; NOT tighter than AND.
    assert_eq!(
        condition("a = :n OR b = :n AND c = :n").unwrap(),
        Condition::Or(Box::new(compare("a")), Box::new(Condition::And(Box::new(compare("b")), Box::new(compare("c")))))
    );
    assert_eq!(
        condition("NOT a = :n AND b = :n").unwrap(),
        Condition::And(Box::new(Condition::Not(Box::new(compare("a")))), Box::new(compare("b")))
    );
    assert_eq!(
        condition("(a = :n OR b = :n) AND c = :n").unwrap(),
        Condition::And(Box::new(Condition::Or(Box::new(compare("a")), Box::new(compare("b")))), Box::new(compare("c")))
    );
    assert_eq!(condition("(a) = :n").unwrap(), compare("a"));
    assert_eq!(condition("#n = :n").unwrap(), compare("n"));
    assert_eq!(
        condition("#dot.x[3] = :n").unwrap(),
        Condition::Compare(
            Comparator::Equal,
            Operand::Path(Path::new(vec![
                PathElement::Name("a.b".into()),
                PathElement::Name("x".into()),
                PathElement::Index(3)
            ])),
            value(json!({"N": "1"}))
        )
    );
    assert_eq!(
        condition("a nOt iN (:n)").err(),
        Some(r#"Invalid ConditionExpression: Syntax error; token: "nOt", near: "a nOt iN""#.into())
    );
    assert!(matches!(condition("a between :n and :n2").unwrap(), Condition::Between(..)));
    assert!(matches!(
        condition("size(a) >= :n").unwrap(),
        Condition::Compare(Comparator::GreaterOrEqual, Operand::Size(_), _)
    ));
    assert!(matches!(
        condition("attribute_type(a, :T)").unwrap(),
        Condition::AttributeType(_, crate::value::ValueType::S)
    ));
    assert!(condition("(NOT (a = :n))").is_ok());
    assert!(condition("((a = :n) AND b = :n)").is_ok());
    assert!(condition("a IN ((:n))").is_ok());
    assert!(condition("size((a)) = :n").is_ok());
    assert!(condition("a[2147483647] = :n").is_ok());
}

fn evaluation_item() -> Item {
    item_from_json(
        json!({
            "pk": {"S": "ev"}, "s": {"S": "héllo"}, "n": {"N": "10"}, "b": {"B": "AAEC"}, "ss": {"SS": ["a", "bc"]},
            "ns": {"NS": ["1", "2"]}, "bs": {"BS": ["AA==", "AQ=="]}, "l": {"L": [{"S": "a"}, {"N": "1"}, {"L": []}]},
            "m": {"M": {"x": {"N": "1"}, "y": {"S": "z"}}}, "nu": {"NULL": true}, "bo": {"BOOL": true}, "e": {"S": ""},
            "emoji": {"S": "😀"}
        })
        .as_object()
        .unwrap(),
    )
    .unwrap()
}

#[test]
fn condition_evaluation_matches_dynamodb_local() {
    let item = evaluation_item();
    let extra = json!({":five": {"N": "5"}, ":six": {"N": "6"}, ":three": {"N": "3"}, ":b01": {"B": "AAE="}, ":la": {"L": [{"S": "a"}]},
        ":mx": {"M": {"x": {"N": "1"}, "y": {"S": "z"}}}, ":bc": {"S": "bc"}, ":ssv": {"SS": ["a", "bc"]}, ":ten": {"N": "10"}, ":one": {"N": "1"}, ":two": {"N": "2"}});
    let mut values = standard_values();
    values.extend(extra.as_object().unwrap().clone());
    let cases: &[(&str, bool)] = &[
        ("size(s) = :five", true),
        ("size(s) = :six", false),
        ("size(b) = :three", true),
        ("size(ss) = :two", true),
        ("size(ns) = :two", true),
        ("size(l) = :three", true),
        ("size(m) = :two", true),
        ("size(n) = :two", false),
        ("size(nu) = :zero", false),
        ("size(e) = :zero", true),
        ("size(emoji) = :two", true),
        ("size(nope) = :zero", false),
        ("size(nope) <> :a", true),
        ("n <> :a", true),
        ("nope <> :a", true),
        ("NOT nope = :a", true),
        ("nope < :a", false),
        ("NOT nope < :a", true),
        ("nope = nope2", false),
        ("nope <> nope2", true),
        ("s < :ten", false),
        ("n < :a", false),
        ("s > :he", true),
        ("s >= :he", true),
        ("b > :b0", true),
        ("b < :b1", true),
        ("b >= :b01", true),
        ("contains(s, :ll)", true),
        ("contains(s, :e)", true),
        ("contains(ss, :bc)", true),
        ("contains(ss, :ssv)", false),
        ("contains(ns, :one)", true),
        ("contains(l, :a)", true),
        ("contains(l, :l0)", true),
        ("contains(l, :la)", false),
        ("contains(b, :b1)", true),
        ("contains(b, :b01)", true),
        ("contains(m, :a)", false),
        ("contains(nope, :a)", false),
        ("NOT contains(nope, :a)", true),
        ("begins_with(s, :he)", true),
        ("begins_with(s, :e)", true),
        ("begins_with(b, :b01)", true),
        ("begins_with(ss, :a)", false),
        ("begins_with(l, :a)", false),
        ("begins_with(s, :b0)", false),
        ("attribute_type(s, :T)", true),
        ("attribute_type(nope, :T)", false),
        ("NOT attribute_type(nope, :T)", true),
        ("attribute_exists(m.x)", true),
        ("attribute_exists(l[2])", true),
        ("attribute_exists(l[3])", false),
        ("attribute_exists(m[0])", false),
        ("attribute_exists(l.x)", false),
        ("attribute_not_exists(l.x)", true),
        ("m = :mx", true),
        ("ss = :ssv", true),
        ("nu = :nu", true),
        ("bo = :t", true),
        ("l[0] = :a", true),
        ("l[1] = :one", true),
        ("m.x = :one", true),
        ("n BETWEEN :one AND :ten", true),
        ("s BETWEEN :a AND :he", false),
        ("n IN (:a, :ten)", true),
        ("nope IN (:a)", false),
        ("size(s) > :a", false),
        ("n = :one OR nope = :a AND n = :one", false),
        ("NOT n = :ten OR n = :ten", true),
    ];
    let mut failures = Vec::new();
    for (text, expected) in cases {
        let texts = [*text];
        let used: serde_json::Map<String, Json> = mentioned(&texts, ':')
            .into_iter()
            .map(|key| (key.clone(), values.get(&key).unwrap_or_else(|| panic!("{key}")).clone()))
            .collect();
        let mut request = RequestExpressions::new(Operation::PutItem);
        request.condition = Some(text);
        request.values = if used.is_empty() { None } else { Some(&used) };
        let resolved = request.resolve().unwrap_or_else(|error| panic!("{text}: {}", error.message));
        let result = resolved.condition.unwrap().evaluate(Some(&item)).unwrap();
        if result != *expected {
            failures.push(*text);
        }
    }
    assert!(failures.is_empty(), "wrong results: {failures:?}");
    // No item at all: every path is missing.
    assert!(condition("attribute_not_exists(a)").unwrap().evaluate(None).unwrap());
    assert!(!condition("a = :n").unwrap().evaluate(None).unwrap());
}

#[test]
fn update_errors() {
    check_errors(
        "UpdateExpression",
        &[
            ("", "The expression can not be empty;"),
            (" ", r#"Syntax error; token: "<EOF>", near: " ""#),
            ("SET a = :n SET b = :n", r#"The "SET" section can only be used once in an update expression;"#),
            (
                "SET a = :n, a = :n2",
                "Two document paths overlap with each other; must remove or rewrite one of these paths; path one: [a], path two: [a]",
            ),
            (
                "SET a = :n REMOVE a",
                "Two document paths overlap with each other; must remove or rewrite one of these paths; path one: [a], path two: [a]",
            ),
            (
                "SET a.b = :n, a = :n2",
                "Two document paths overlap with each other; must remove or rewrite one of these paths; path one: [a, b], path two: [a]",
            ),
            (
                "SET a[1] = :n, a.b = :n2",
                "Two document paths conflict with each other; must remove or rewrite one of these paths; path one: [a, [1]], path two: [a, b]",
            ),
            (
                "SET a[0][1] = :n, a[0].c = :n",
                "Two document paths conflict with each other; must remove or rewrite one of these paths; path one: [a, [0], [1]], path two: [a, [0], c]",
            ),
            (
                "REMOVE a, a",
                "Two document paths overlap with each other; must remove or rewrite one of these paths; path one: [a], path two: [a]",
            ),
            (
                "REMOVE a, b, a[0]",
                "Two document paths overlap with each other; must remove or rewrite one of these paths; path one: [a], path two: [b]",
            ),
            (
                "REMOVE x, a, y, z, a",
                "Two document paths overlap with each other; must remove or rewrite one of these paths; path one: [a], path two: [z]",
            ),
            (
                "REMOVE p, q, r, x.y, x",
                "Two document paths overlap with each other; must remove or rewrite one of these paths; path one: [x, y], path two: [x]",
            ),
            (
                "SET a = :n, b = :n, c = :n, b.x = :n, a.y = :n",
                "Two document paths overlap with each other; must remove or rewrite one of these paths; path one: [b], path two: [c]",
            ),
            (
                "SET b = :n REMOVE a ADD c :n DELETE a :ss",
                "Two document paths overlap with each other; must remove or rewrite one of these paths; path one: [a], path two: [c]",
            ),
            (
                "SET a = :s + :n, a = :n",
                "Two document paths overlap with each other; must remove or rewrite one of these paths; path one: [a], path two: [a]",
            ),
            (
                "SET #a = :n, a = :n",
                "Two document paths overlap with each other; must remove or rewrite one of these paths; path one: [a], path two: [a]",
            ),
            (
                "SET a = :n, a = :n, #zz = :n",
                "An expression attribute name used in the document path is not defined; attribute name: #zz",
            ),
            (
                "ADD a :s",
                "Incorrect operand type for operator or function; operator: ADD, operand type: STRING, typeSet: ALLOWED_FOR_ADD_OPERAND",
            ),
            (
                "ADD a :l",
                "Incorrect operand type for operator or function; operator: ADD, operand type: LIST, typeSet: ALLOWED_FOR_ADD_OPERAND",
            ),
            (
                "ADD a :b",
                "Incorrect operand type for operator or function; operator: ADD, operand type: BINARY, typeSet: ALLOWED_FOR_ADD_OPERAND",
            ),
            (
                "ADD a :t",
                "Incorrect operand type for operator or function; operator: ADD, operand type: BOOLEAN, typeSet: ALLOWED_FOR_ADD_OPERAND",
            ),
            (
                "ADD a :m",
                "Incorrect operand type for operator or function; operator: ADD, operand type: MAP, typeSet: ALLOWED_FOR_ADD_OPERAND",
            ),
            (
                "ADD a :nu",
                "Incorrect operand type for operator or function; operator: ADD, operand type: NULL, typeSet: ALLOWED_FOR_ADD_OPERAND",
            ),
            (
                "DELETE a :n",
                "Incorrect operand type for operator or function; operator: DELETE, operand type: NUMBER, typeSet: ALLOWED_FOR_DELETE_OPERAND",
            ),
            (
                "DELETE a :s",
                "Incorrect operand type for operator or function; operator: DELETE, operand type: STRING, typeSet: ALLOWED_FOR_DELETE_OPERAND",
            ),
            ("ADD a b", r#"Syntax error; token: "b", near: "a b""#),
            ("ADD a size(b)", r#"Syntax error; token: "size", near: "a size(""#),
            (
                "SET a = :n + :s",
                "Incorrect operand type for operator or function; operator or function: +, operand type: S",
            ),
            (
                "SET a = :s - :n",
                "Incorrect operand type for operator or function; operator or function: -, operand type: S",
            ),
            (
                "SET a = :ss + :n",
                "Incorrect operand type for operator or function; operator or function: +, operand type: SS",
            ),
            ("SET a = a + b + c", r#"Syntax error; token: "+", near: "b + c""#),
            ("SET a = size(b)", "The function is not allowed in an update expression; function: size"),
            (
                "SET a = attribute_exists(b)",
                "The function is not allowed in an update expression; function: attribute_exists",
            ),
            ("SET a = foo(b)", "Invalid function name; function: foo"),
            (
                "SET a = if_not_exists(:n, :n)",
                "Operator or function requires a document path; operator or function: if_not_exists",
            ),
            (
                "SET a = if_not_exists(b)",
                "Incorrect number of operands for operator or function; operator or function: if_not_exists, number of operands: 1",
            ),
            (
                "SET a = list_append(:l, :n)",
                "Incorrect operand type for operator or function; operator or function: list_append, operand type: N",
            ),
            (
                "SET a = list_append(:l, :l, :l)",
                "Incorrect number of operands for operator or function; operator or function: list_append, number of operands: 3",
            ),
            ("SET a = ((:n))", "The expression has redundant parentheses;"),
            ("SET :n = a", r#"Syntax error; token: ":n", near: "SET :n =""#),
            ("SET a", r#"Syntax error; token: "<EOF>", near: "a""#),
            ("REMOVE", r#"Syntax error; token: "<EOF>", near: "REMOVE""#),
            ("ADD a :n :n2", r#"Syntax error; token: ":n2", near: ":n :n2""#),
            ("SET a = :n,", r#"Syntax error; token: "<EOF>", near: ",""#),
            ("SET a = :n, REMOVE b", r#"Syntax error; token: "REMOVE", near: ", REMOVE b""#),
            ("status = :n", r#"Syntax error; token: "status", near: "status =""#),
            ("SET status = :n", "Attribute name is a reserved keyword; reserved keyword: status"),
            ("SET a = b.status", "Attribute name is a reserved keyword; reserved keyword: status"),
            ("SET a = size(b), status = :n", "The function is not allowed in an update expression; function: size"),
            ("SET a = :zz, b = size(c)", "The function is not allowed in an update expression; function: size"),
            ("SET a = :n, a = :n REMOVE status", "Attribute name is a reserved keyword; reserved keyword: status"),
            (
                "SET a = :n SET b = :n REMOVE status",
                r#"The "SET" section can only be used once in an update expression;"#,
            ),
        ],
        |text| update(text).map(|_| ()),
    );
    assert!(update("REMOVE b SET a = :n ADD c :n DELETE d :ss").is_ok());
    assert!(update("set a = :n, b = if_not_exists(b, :n) + :n2, c = list_append(if_not_exists(c, :l0), :l)").is_ok());
    assert!(update("SET a[1] = :n, a[2] = :n2 REMOVE b[0], b[1]").is_ok());
}

fn apply(base: &Json, text: &str) -> Result<Json, String> {
    let update = update(text)?;
    let item = item_from_json(base.as_object().unwrap()).unwrap();
    update.apply(&item).map(|outcome| item_to_json(&outcome.item)).map_err(|error| error.message)
}

#[test]
fn update_semantics_match_dynamodb_local() {
    let base = json!({"pk": {"S": "up"}, "s": {"S": "x"}, "n": {"N": "5"},
        "l": {"L": [{"N": "0"}, {"N": "1"}, {"N": "2"}, {"N": "3"}]},
        "m": {"M": {"k": {"N": "1"}, "j": {"M": {}}}}, "ss": {"SS": ["a", "b"]}, "ns": {"NS": ["1"]}});
    let missing = "The provided expression refers to an attribute that does not exist in the item";
    let wrong_type = "An operand in the update expression has an incorrect data type";
    let invalid = "The document path provided in the update expression is invalid for update";
    let errors: &[(&str, &str)] = &[
        ("SET x = nope", missing),
        ("SET x = nope + :n", missing),
        ("SET x = l[9]", missing),
        ("SET x = list_append(nope, :l)", missing),
        ("SET x = s + :n", wrong_type),
        ("SET x = :n + s", wrong_type),
        ("SET x = list_append(s, :l)", wrong_type),
        ("SET x = if_not_exists(s, :n) + :n", wrong_type),
        ("SET nope.a = :n", invalid),
        ("SET s.a = :n", invalid),
        ("SET l[1].x = :n", invalid),
        ("SET m.k.z = :n", invalid),
        ("SET nope[0] = :n", invalid),
        ("SET s[0] = :n", invalid),
        ("REMOVE nope.a", invalid),
        ("REMOVE s.a", invalid),
        ("REMOVE l[0].x", invalid),
        ("DELETE ns :ssa", wrong_type),
        ("DELETE s :ssa", wrong_type),
        ("DELETE nope.x :ssa", invalid),
        ("ADD ss :ns7", wrong_type),
        ("ADD s :n", wrong_type),
        ("ADD n :ssc", wrong_type),
        ("ADD ss :bs", wrong_type),
        ("ADD nope.x :n", invalid),
        ("ADD n :big", "DynamoDB only supports precision up to 38 digits"),
        ("SET x = :big + :big", "DynamoDB only supports precision up to 38 digits"),
    ];
    for (text, expected) in errors {
        assert_eq!(apply(&base, text), Err(expected.to_string()), "{text}");
    }
    let changes: &[(&str, Json)] = &[
        ("SET x = n - :n", json!({"x": {"N": "4"}})),
        ("SET l[10] = :s", json!({"l": {"L": [{"N": "0"}, {"N": "1"}, {"N": "2"}, {"N": "3"}, {"S": "x"}]}})),
        ("REMOVE l[1], l[2]", json!({"l": {"L": [{"N": "0"}, {"N": "3"}]}})),
        ("REMOVE nope", json!({})),
        ("REMOVE l[10]", json!({})),
        ("REMOVE m.k, m.nope", json!({"m": {"M": {"j": {"M": {}}}}})),
        ("DELETE ss :ssa", json!({"ss": {"SS": ["b"]}})),
        ("DELETE ss :ss", json!({"ss": null})),
        ("DELETE ss :ssc", json!({})),
        ("DELETE nope :ssa", json!({})),
        ("DELETE m.nope :ssa", json!({})),
        ("ADD nope :n", json!({"nope": {"N": "1"}})),
        ("ADD n :n", json!({"n": {"N": "6"}})),
        ("ADD ss :ssc", json!({"ss": {"SS": ["a", "b", "c"]}})),
        ("ADD ns :ns7", json!({"ns": {"NS": ["1", "7"]}})),
        ("ADD nope :ssc", json!({"nope": {"SS": ["c"]}})),
        ("ADD l[1] :n", json!({"l": {"L": [{"N": "0"}, {"N": "2"}, {"N": "2"}, {"N": "3"}]}})),
        ("ADD l[9] :n", json!({"l": {"L": [{"N": "0"}, {"N": "1"}, {"N": "2"}, {"N": "3"}, {"N": "1"}]}})),
        (
            "SET x = list_append(l, :l)",
            json!({"x": {"L": [{"N": "0"}, {"N": "1"}, {"N": "2"}, {"N": "3"}, {"S": "z"}]}}),
        ),
        (
            "SET x = list_append(:l, l)",
            json!({"x": {"L": [{"S": "z"}, {"N": "0"}, {"N": "1"}, {"N": "2"}, {"N": "3"}]}}),
        ),
        ("SET x = list_append(if_not_exists(nope, :l), :l)", json!({"x": {"L": [{"S": "z"}, {"S": "z"}]}})),
        ("SET x = if_not_exists(n, :s)", json!({"x": {"N": "5"}})),
        ("SET x = if_not_exists(nope, :s)", json!({"x": {"S": "x"}})),
        ("SET x = if_not_exists(nope.x, :n)", json!({"x": {"N": "1"}})),
        ("SET n = if_not_exists(n, :s) + :n", json!({"n": {"N": "6"}})),
        ("SET x = :n - :n", json!({"x": {"N": "0"}})),
        ("SET m.k = m.k + :n", json!({"m": {"M": {"k": {"N": "2"}, "j": {"M": {}}}}})),
        ("SET l[1] = l[0]", json!({"l": {"L": [{"N": "0"}, {"N": "0"}, {"N": "2"}, {"N": "3"}]}})),
        (
            "SET l[0] = :s, l[8] = :s, l[6] = :s",
            json!({"l": {"L": [{"S": "x"}, {"N": "1"}, {"N": "2"}, {"N": "3"}, {"S": "x"}, {"S": "x"}]}}),
        ),
        ("REMOVE l[0] SET l[1] = :s", json!({"l": {"L": [{"S": "x"}, {"N": "2"}, {"N": "3"}]}})),
        ("SET m = :m, x = m.k", json!({"x": {"N": "1"}, "m": {"M": {}}})),
        ("SET n = :n, x = n", json!({"n": {"N": "1"}, "x": {"N": "5"}})),
    ];
    for (text, change) in changes {
        let mut expected = base.as_object().unwrap().clone();
        for (name, value) in change.as_object().unwrap() {
            if value.is_null() {
                expected.remove(name);
            } else {
                expected.insert(name.clone(), value.clone());
            }
        }
        assert_eq!(apply(&base, text), Ok(Json::Object(expected)), "{text}");
    }
}

#[test]
fn update_outcome_lists_written_paths_and_attributes() {
    let item = item_from_json(
        json!({"pk": {"S": "k"}, "m": {"M": {"k": {"N": "1"}}}, "l": {"L": [{"N": "1"}]}}).as_object().unwrap(),
    )
    .unwrap();
    let outcome = update("SET m.k = :s, x = :n REMOVE l[0], nope").unwrap().apply(&item).unwrap();
    assert_eq!(outcome.written_attributes.iter().cloned().collect::<Vec<_>>(), vec!["l", "m", "nope", "x"]);
    assert_eq!(outcome.updated_paths.len(), 4);
    let old = outcome.project_updated(&item);
    assert_eq!(old.keys().cloned().collect::<Vec<_>>(), vec!["l", "m"]);
    let new = outcome.project_updated(&outcome.item);
    // Only the written paths, inside their parents; removed paths are gone from the new item.
    assert_eq!(item_to_json(&old), json!({"l": {"L": [{"N": "1"}]}, "m": {"M": {"k": {"N": "1"}}}}));
    assert_eq!(item_to_json(&new), json!({"m": {"M": {"k": {"S": "x"}}}, "x": {"N": "1"}}));
    // Applying twice from the same input gives the same outcome (consensus retries).
    let again = update("SET m.k = :s, x = :n REMOVE l[0], nope").unwrap().apply(&item).unwrap();
    assert_eq!(again, outcome);
}

#[test]
fn projections() {
    check_errors(
        "ProjectionExpression",
        &[
            ("a x", r#"Syntax error; token: "x", near: "a x""#),
            ("status", "Attribute name is a reserved keyword; reserved keyword: status"),
            ("set", r#"Syntax error; token: "set", near: "set""#),
            ("#zz", "An expression attribute name used in the document path is not defined; attribute name: #zz"),
            (
                "a, a",
                "Two document paths overlap with each other; must remove or rewrite one of these paths; path one: [a], path two: [a]",
            ),
            (
                "a.b, a",
                "Two document paths overlap with each other; must remove or rewrite one of these paths; path one: [a, b], path two: [a]",
            ),
            (
                "a[1], a.b",
                "Two document paths conflict with each other; must remove or rewrite one of these paths; path one: [a, [1]], path two: [a, b]",
            ),
            ("", "The expression can not be empty;"),
        ],
        |text| projection(text).map(|_| ()),
    );
    assert!(projection("size, convert, attribute_exists").is_ok());
    let item = evaluation_item();
    let project = |text: &str| item_to_json(&projection(text).unwrap().apply(&item));
    assert_eq!(project("s, nope"), json!({"s": {"S": "héllo"}}));
    assert_eq!(project("m.x, m.nope, nope.x"), json!({"m": {"M": {"x": {"N": "1"}}}}));
    assert_eq!(project("l[2], l[0], l[7]"), json!({"l": {"L": [{"S": "a"}, {"L": []}]}}));
    assert_eq!(project("m.y, #n"), json!({"m": {"M": {"y": {"S": "z"}}}, "n": {"N": "10"}}));
    assert_eq!(project("s.x, l.x, m[0]"), json!({}));
    let nested = item_from_json(
        json!({"ll": {"L": [{"M": {"a": {"N": "1"}, "b": {"N": "2"}}}, {"L": [{"N": "5"}, {"N": "6"}]}]}})
            .as_object()
            .unwrap(),
    )
    .unwrap();
    let project_nested = |text: &str| item_to_json(&projection(text).unwrap().apply(&nested));
    assert_eq!(
        project_nested("ll[0].b, ll[1][1], ll[0].a"),
        json!({"ll": {"L": [{"M": {"a": {"N": "1"}, "b": {"N": "2"}}}, {"L": [{"N": "6"}]}]}})
    );
    assert_eq!(project_nested("ll[1][1], ll[1][0]"), json!({"ll": {"L": [{"L": [{"N": "5"}, {"N": "6"}]}]}}));
}

#[test]
fn key_conditions() {
    let key = |text: &'static str| {
        resolve_texts(Operation::Query, |request| request.key_condition = Some(text))
            .map(|resolved| resolved.key_condition.unwrap())
    };
    let parsed = key("pk = :s AND sk BETWEEN :n AND :n2").unwrap();
    assert_eq!(parsed.parts.len(), 2);
    assert_eq!(parsed.parts[1].attribute, "sk");
    assert!(matches!(parsed.parts[1].condition, SortKeyCondition::Between(..)));
    let mirrored = key(":n < sk").unwrap();
    assert!(matches!(mirrored.parts[0].condition, SortKeyCondition::Compare(Comparator::Greater, _)));
    assert!(matches!(key("begins_with(sk, :s)").unwrap().parts[0].condition, SortKeyCondition::BeginsWith(_)));
    let errors: &[(&str, &str)] = &[
        ("pk = :s OR sk = :n", "Invalid operator used in KeyConditionExpression: OR"),
        ("pk = :s AND sk <> :n", "Invalid operator used in KeyConditionExpression: <>"),
        ("NOT pk = :s", "Invalid operator used in KeyConditionExpression: NOT"),
        ("pk IN (:s)", "Invalid operator used in KeyConditionExpression: IN"),
        ("contains(pk, :s)", "Invalid operator used in KeyConditionExpression: contains"),
        ("pk = :s AND attribute_exists(sk)", "Invalid operator used in KeyConditionExpression: attribute_exists"),
        (
            "pk.x = :s",
            "Key attributes must be scalars; list random access '[]' and map lookup '.' are not allowed: Key: pk",
        ),
        (
            "pk = :s AND sk[1] = :s",
            "Key attributes must be scalars; list random access '[]' and map lookup '.' are not allowed: Key: sk",
        ),
        ("pk = :s AND size(sk) = :n", "KeyConditionExpressions cannot contain nested operations"),
        ("pk = :s AND sk = :n AND sk = :n", "KeyConditionExpressions must only contain one condition per key"),
        ("pk = :s AND pk = :s", "KeyConditionExpressions must only contain one condition per key"),
        ("pk = :s AND sk = :n AND a = :n", "Conditions can be of length 1 or 2 only"),
        (
            "pk = :s AND sk BETWEEN sk2 AND :n",
            "Invalid condition in KeyConditionExpression: Multiple attribute names used in one condition",
        ),
        (
            "pk = pk",
            "Invalid KeyConditionExpression: The first operand must be distinct from the remaining operands for this operator or function; operator: =, first operand: [pk]",
        ),
        ("pk = :s AND ((sk = :n))", "Invalid KeyConditionExpression: The expression has redundant parentheses;"),
        (
            "pk = :s AND begins_with(sk, :n)",
            "Invalid KeyConditionExpression: Incorrect operand type for operator or function; operator or function: begins_with, operand type: N",
        ),
    ];
    for (text, expected) in errors {
        assert_eq!(key(text).map(|_| ()), Err(expected.to_string()), "{text}");
    }
}

#[test]
fn expression_attribute_maps_without_expressions() {
    let names = json!({"#v": "x"}).as_object().unwrap().clone();
    let values = json!({":v": {"S": "x"}}).as_object().unwrap().clone();
    let mut request = RequestExpressions::new(Operation::GetItem);
    request.names = Some(&names);
    assert_eq!(
        request.resolve().unwrap_err().message,
        "ExpressionAttributeNames can only be specified when using expressions"
    );
    for (operation, expected) in [
        (Operation::PutItem, "ConditionExpression is null"),
        (Operation::UpdateItem, "UpdateExpression and ConditionExpression are null"),
        (Operation::Query, "FilterExpression and KeyConditionExpression are null"),
        (Operation::Scan, "FilterExpression is null"),
    ] {
        let mut request = RequestExpressions::new(operation);
        request.values = Some(&values);
        assert_eq!(
            request.resolve().unwrap_err().message,
            format!("ExpressionAttributeValues can only be specified when using expressions: {expected}")
        );
    }
    let mut request = RequestExpressions::new(Operation::GetItem);
    request.projection = Some("a");
    request.names = Some(&names);
    assert_eq!(
        request.resolve().unwrap_err().message,
        "Value provided in ExpressionAttributeNames unused in expressions: keys: {#v}"
    );
}

#[test]
fn legacy_parameters() {
    let expected_error = |expected: Json, operator: Option<Json>| {
        let mut request = RequestExpressions::new(Operation::PutItem);
        request.expected = Some(&expected);
        request.conditional_operator = operator.as_ref();
        request.resolve().map(|_| ()).unwrap_err().message
    };
    let s = json!({"S": "x"});
    let cases = [
        (
            json!({"a": {"Exists": false, "Value": s}}),
            "One or more parameter values were invalid: Value cannot be used when Exists is false for Attribute: a",
        ),
        (
            json!({"a": {"Exists": true}}),
            "One or more parameter values were invalid: Value must be provided when Exists is true for Attribute: a",
        ),
        (
            json!({"a": {}}),
            "One or more parameter values were invalid: Value must be provided when Exists is null for Attribute: a",
        ),
        (
            json!({"a": {"ComparisonOperator": "EQ"}}),
            "One or more parameter values were invalid: Value or AttributeValueList must be used with ComparisonOperator: EQ for Attribute: a",
        ),
        (
            json!({"a": {"ComparisonOperator": "EQ", "AttributeValueList": []}}),
            "One or more parameter values were invalid: Invalid number of argument(s) for the EQ ComparisonOperator",
        ),
        (
            json!({"a": {"ComparisonOperator": "NULL", "AttributeValueList": [s]}}),
            "One or more parameter values were invalid: Invalid number of argument(s) for the NULL ComparisonOperator",
        ),
        (
            json!({"a": {"ComparisonOperator": "BETWEEN", "AttributeValueList": [s]}}),
            "One or more parameter values were invalid: Invalid number of argument(s) for the BETWEEN ComparisonOperator",
        ),
        (
            json!({"a": {"ComparisonOperator": "FOO", "AttributeValueList": [s]}}),
            "Comparison type does not exist in DynamoDB",
        ),
        (
            json!({"a": {"ComparisonOperator": "EQ", "AttributeValueList": [s], "Value": s}}),
            "One or more parameter values were invalid: Value and AttributeValueList cannot be used together for Attribute: a",
        ),
        (
            json!({"a": {"ComparisonOperator": "EQ", "AttributeValueList": [s], "Exists": true}}),
            "One or more parameter values were invalid: Exists and ComparisonOperator cannot be used together for Attribute: a",
        ),
        (
            json!({"a": {"ComparisonOperator": "LT", "AttributeValueList": [{"SS": ["a"]}]}}),
            "One or more parameter values were invalid: ComparisonOperator LT is not valid for SS AttributeValue type",
        ),
        (
            json!({"a": {"ComparisonOperator": "BEGINS_WITH", "AttributeValueList": [{"N": "1"}]}}),
            "One or more parameter values were invalid: ComparisonOperator BEGINS_WITH is not valid for N AttributeValue type",
        ),
        (
            json!({"a": {"ComparisonOperator": "CONTAINS", "AttributeValueList": [{"L": []}]}}),
            "One or more parameter values were invalid: ComparisonOperator CONTAINS is not valid for L AttributeValue type",
        ),
        (
            json!({"a": {"ComparisonOperator": "BETWEEN", "AttributeValueList": [{"N": "1"}, s]}}),
            "One or more parameter values were invalid: AttributeValues inside AttributeValueList must be of same type",
        ),
        (
            json!({"a": {"ComparisonOperator": "BETWEEN", "AttributeValueList": [{"N": "5"}, {"N": "1"}]}}),
            "The BETWEEN condition was provided a range where the lower bound is greater than the upper bound",
        ),
        (
            json!({"a": {"ComparisonOperator": "IN", "AttributeValueList": [s, {"SS": ["a"]}]}}),
            "One or more parameter values were invalid: ComparisonOperator IN is not valid for SS AttributeValue type",
        ),
    ];
    for (expected, message) in cases {
        assert_eq!(expected_error(expected.clone(), None), message, "{expected}");
    }
    assert_eq!(
        expected_error(json!({"a": {"Exists": false}}), Some(json!("OR"))),
        "ConditionalOperator can only be used when Filter or Expected has two or more elements"
    );
    let mut request = RequestExpressions::new(Operation::PutItem);
    let operator = json!("OR");
    request.conditional_operator = Some(&operator);
    assert_eq!(request.resolve().unwrap_err().message, "ConditionalOperator cannot be used without Filter or Expected");

    // Mixing.
    let expected = json!({"a": {"Exists": false}});
    let mut request = RequestExpressions::new(Operation::UpdateItem);
    request.expected = Some(&expected);
    request.update = Some("SET a = :v");
    request.condition = Some("a = :v");
    assert_eq!(
        request.resolve().unwrap_err().message,
        "Can not use both expression and non-expression parameters in the same request: Non-expression parameters: {Expected} Expression parameters: {UpdateExpression, ConditionExpression}"
    );
    let attributes = json!(["a"]);
    let mut request = RequestExpressions::new(Operation::Query);
    request.attributes_to_get = Some(&attributes);
    request.conditional_operator = Some(&operator);
    request.projection = Some("a");
    request.filter = Some("a = :v");
    request.key_condition = Some("pk = :v");
    assert_eq!(
        request.resolve().unwrap_err().message,
        "Can not use both expression and non-expression parameters in the same request: Non-expression parameters: {AttributesToGet, ConditionalOperator} Expression parameters: {ProjectionExpression, FilterExpression, KeyConditionExpression}"
    );

    // Conversions evaluate like their expression equivalents.
    let item = evaluation_item();
    let resolve_expected = |json: Json, operator: Option<Json>| {
        let mut request = RequestExpressions::new(Operation::PutItem);
        request.expected = Some(&json);
        request.conditional_operator = operator.as_ref();
        request.resolve().unwrap().condition.unwrap().evaluate(Some(&item)).unwrap()
    };
    assert!(resolve_expected(json!({"nope": {"Exists": false}, "n": {"Value": {"N": "10"}}}), None));
    assert!(!resolve_expected(json!({"nope": {"Exists": true, "Value": {"N": "1"}}}), None));
    assert!(resolve_expected(
        json!({"nope": {"ComparisonOperator": "NOT_NULL"}, "s": {"ComparisonOperator": "BEGINS_WITH", "AttributeValueList": [{"S": "hé"}]}}),
        Some(json!("OR"))
    ));
    assert!(resolve_expected(
        json!({"n": {"ComparisonOperator": "BETWEEN", "AttributeValueList": [{"N": "1"}, {"N": "10"}]}, "ss": {"ComparisonOperator": "NOT_CONTAINS", "AttributeValueList": [{"S": "z"}]}}),
        None
    ));
    assert!(resolve_expected(
        json!({"n": {"ComparisonOperator": "IN", "AttributeValueList": [{"N": "1"}, {"N": "10"}]}}),
        None
    ));

    let updates = json!({"s": {"Action": "PUT", "Value": {"S": "new"}}, "n": {"Action": "ADD", "Value": {"N": "1"}},
        "ss": {"Action": "DELETE", "Value": {"SS": ["a"]}}, "e": {"Action": "DELETE"}, "l": {"Action": "ADD", "Value": {"L": [{"N": "9"}]}}});
    let mut request = RequestExpressions::new(Operation::UpdateItem);
    request.attribute_updates = Some(&updates);
    let outcome = request.resolve().unwrap().update.unwrap().apply(&item).unwrap();
    assert_eq!(item_to_json(&outcome.item)["s"], json!({"S": "new"}));
    assert_eq!(item_to_json(&outcome.item)["n"], json!({"N": "11"}));
    assert_eq!(item_to_json(&outcome.item)["ss"], json!({"SS": ["bc"]}));
    assert_eq!(item_to_json(&outcome.item)["l"]["L"].as_array().unwrap().len(), 4);
    assert!(!outcome.item.contains_key("e"));

    let attributes = json!(["s", "status"]);
    let mut request = RequestExpressions::new(Operation::GetItem);
    request.attributes_to_get = Some(&attributes);
    let projected = request.resolve().unwrap().projection.unwrap().apply(&item);
    assert_eq!(projected.keys().cloned().collect::<Vec<_>>(), vec!["s"]);

    let key_conditions = json!({"pk": {"ComparisonOperator": "EQ", "AttributeValueList": [{"S": "x"}]},
        "sk": {"ComparisonOperator": "BEGINS_WITH", "AttributeValueList": [{"S": "p"}]}});
    let scan_filter = json!({"n": {"ComparisonOperator": "GT", "AttributeValueList": [{"N": "3"}]}});
    let mut request = RequestExpressions::new(Operation::Query);
    request.key_conditions = Some(&key_conditions);
    request.query_filter = Some(&scan_filter);
    let resolved = request.resolve().unwrap();
    assert_eq!(resolved.key_condition.unwrap().parts.len(), 2);
    assert!(resolved.filter.unwrap().evaluate(Some(&item)).unwrap());
}

/// A small deterministic generator (xorshift), so the fuzz test needs no dependency and every
/// failure names the seed that reproduces it.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }
}

/// Token soup and mutations of valid expressions never panic: every outcome is Ok or a
/// ValidationException, and evaluation of whatever resolves never panics either.
#[test]
fn random_inputs_never_panic() {
    const TOKENS: &[&str] = &[
        "a",
        "b",
        "#a",
        "#zz",
        ":n",
        ":s",
        ":l",
        ":ss",
        ":zz",
        "=",
        "<>",
        "<",
        "<=",
        ">",
        ">=",
        "(",
        ")",
        "[",
        "]",
        "0",
        "1",
        "99999999999",
        ",",
        ".",
        "+",
        "-",
        "AND",
        "OR",
        "NOT",
        "BETWEEN",
        "IN",
        "SET",
        "REMOVE",
        "ADD",
        "DELETE",
        "size",
        "attribute_exists",
        "attribute_type",
        "begins_with",
        "contains",
        "if_not_exists",
        "list_append",
        "status",
        "$",
        "é",
        " ",
        "'",
    ];
    const SEEDS: &[&str] = &[
        "a = :n AND (b < :s OR NOT attribute_exists(#a))",
        "SET a = if_not_exists(b, :n) + :n, c = list_append(:l, c) REMOVE d[1] ADD e :ss DELETE f :ss",
        "a.b[1], #a, c",
        "a BETWEEN :n AND :n OR a IN (:n, :s) AND begins_with(b, :s) AND size(c) > :n",
    ];
    let item = evaluation_item();
    let mut random = Random(0x9E37_79B9_7F4A_7C15);
    for round in 0..4000 {
        let text: String = if round % 2 == 0 {
            (0..random.below(12) + 1).map(|_| TOKENS[random.below(TOKENS.len())]).collect::<Vec<_>>().join(" ")
        } else {
            let mut text: Vec<char> = SEEDS[random.below(SEEDS.len())].chars().collect();
            for _ in 0..random.below(4) + 1 {
                let position = random.below(text.len() + 1);
                match random.below(3) {
                    0 if position < text.len() => {
                        text.remove(position);
                    }
                    1 => text.insert(position, TOKENS[random.below(TOKENS.len())].chars().next().unwrap_or(' ')),
                    _ => {
                        let token = TOKENS[random.below(TOKENS.len())];
                        for (offset, character) in token.chars().enumerate() {
                            text.insert(position + offset, character);
                        }
                    }
                }
            }
            text.into_iter().collect()
        };
        for operation in [Operation::PutItem, Operation::UpdateItem, Operation::GetItem, Operation::Query] {
            let result = resolve_texts(operation, |request| match operation {
                Operation::PutItem => request.condition = Some(&text),
                Operation::UpdateItem => request.update = Some(&text),
                Operation::GetItem => request.projection = Some(&text),
                _ => request.key_condition = Some(&text),
            });
            match result {
                Ok(resolved) => {
                    if let Some(condition) = resolved.condition {
                        condition.evaluate(Some(&item)).unwrap();
                    }
                    if let Some(update) = resolved.update {
                        let _ = update.apply(&item);
                    }
                    if let Some(projection) = resolved.projection {
                        projection.apply(&item);
                    }
                }
                Err(message) => assert!(!message.is_empty(), "round {round}: {text:?}"),
            }
        }
    }
}

#[test]
fn deep_nesting_is_refused_without_overflowing_the_stack() {
    // Redundant parentheses and long NOT chains exceed the nesting limit long before the
    // expression size limit; each gives DynamoDB's message, not a stack overflow.
    let text = format!("{}a = :n{}", "(".repeat(2000), ")".repeat(2000));
    assert!(condition(&text).is_err());
    let text = format!("{}a = :n", "NOT ".repeat(1000));
    assert!(condition(&text).is_err());
    let text = format!("SET a = {}:n{}", "(".repeat(2000), ")".repeat(2000));
    assert!(update(&text).is_err());
    let text = format!("{}a{}", "size(".repeat(1000), ")".repeat(1000));
    assert!(condition(&format!("{text} = :n")).is_err());
}

#[test]
fn nesting_at_the_limit_fits_a_small_stack() {
    // Half the limit in `(NOT …)` pairs is the deepest accepted nesting; it must resolve and
    // evaluate on a 1 MB stack (half a server thread's), in debug builds too.
    let depth = NESTING_DEPTH_MAX / 2;
    let text = format!("{}a = :n{}", "(NOT ".repeat(depth), ")".repeat(depth));
    let outcome = std::thread::Builder::new()
        .stack_size(1 << 20)
        .spawn(move || condition(&text).map(|condition| condition.evaluate(None).unwrap()))
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(outcome, Ok(false));
    let deeper = format!("{}a = :n{}", "(NOT ".repeat(depth + 1), ")".repeat(depth + 1));
    assert!(condition(&deeper).is_err());
}

/// UPDATED_OLD / UPDATED_NEW project the written paths literally, as DynamoDB does (facts recorded
/// by ScyllaDB Alternator's `test_update_item_returnvalues_nested`, run against DynamoDB).
#[test]
fn updated_values_are_the_literal_paths_written() {
    let item = item_from_json(
        json!({"p": {"S": "k"}, "a": {"M": {"b": {"S": "dog"}, "c": {"L": [{"N": "1"}, {"N": "2"}, {"N": "3"}]}}}})
            .as_object()
            .unwrap(),
    )
    .unwrap();
    let returned = |text: &str, new: bool| {
        let outcome = update(text).unwrap().apply(&item).unwrap();
        item_to_json(&outcome.project_updated(if new { &outcome.item } else { &item }))
    };
    assert_eq!(returned("SET a.b = :n", false), json!({"a": {"M": {"b": {"S": "dog"}}}}));
    assert_eq!(returned("SET a.b = :n", true), json!({"a": {"M": {"b": {"N": "1"}}}}));
    // An append past the end is not at the path written, so nothing comes back.
    assert_eq!(returned("SET a.c[100] = :n", true), json!({}));
    // After REMOVE a.c[1], the element that moved into a.c[1] is what UPDATED_NEW shows.
    assert_eq!(returned("REMOVE a.c[1]", true), json!({"a": {"M": {"c": {"L": [{"N": "3"}]}}}}));
    assert_eq!(returned("REMOVE a.c[1], a.c[3]", false), json!({"a": {"M": {"c": {"L": [{"N": "2"}]}}}}));
    assert_eq!(returned("SET a.x1 = :n", false), json!({}));
    // Several appends past the end land in index order.
    let appended = update("SET a.c[9] = :s, a.c[7] = :n").unwrap().apply(&item).unwrap();
    assert_eq!(
        item_to_json(&appended.item)["a"]["M"]["c"],
        json!({"L": [{"N": "1"}, {"N": "2"}, {"N": "3"}, {"N": "1"}, {"S": "x"}]})
    );
}

/// Thousands of legacy conditions must not build a tree deep enough to overflow the stack when
/// evaluated or dropped, and big legacy lists must be checked in linear time (fuzzing findings;
/// the multi-megabyte versions live in fuzz/tests/large_requests.rs).
#[test]
fn large_legacy_parameters_stay_shallow_and_linear() {
    let entries: serde_json::Map<String, Json> =
        (0..20_000).map(|index| (format!("a{index}"), json!({"Exists": false}))).collect();
    let expected = Json::Object(entries);
    let mut request = RequestExpressions::new(Operation::PutItem);
    request.expected = Some(&expected);
    let condition = request.resolve().unwrap().condition.unwrap();
    assert_eq!(condition.evaluate(None), Ok(true));
    drop(condition);

    let names = Json::Array((0..50_000).map(|index| json!(format!("n{index}"))).collect());
    let mut request = RequestExpressions::new(Operation::GetItem);
    request.attributes_to_get = Some(&names);
    // With the old quadratic duplicate check this took minutes; the suite's timeout catches it.
    assert_eq!(request.resolve().unwrap().projection.unwrap().paths.len(), 50_000);
}
