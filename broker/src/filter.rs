//! Filters a consumer reads through, evaluated on the broker and parsed once per request: tag
//! expressions (`*`, `TagA||TagB`) and RocketMQ's SQL92 subset over a message's user
//! properties (and its tag, as `TAGS`):
//!
//! - comparisons `=`, `<>` (or `!=`), `>`, `>=`, `<`, `<=`; `[NOT] BETWEEN a AND b`;
//!   `[NOT] IN ('a', 'b')`; `IS [NOT] NULL`;
//! - `AND`, `OR`, `NOT`, parentheses; constants: numbers (`3`, `-1.5`), strings (`'it''s'`),
//!   `TRUE`, `FALSE`, `NULL`.
//!
//! Values are strings, as properties are: an ordering comparison or `BETWEEN` compares numbers
//! when both sides parse as numbers and is unknown otherwise; `=`/`<>` compare numbers when both
//! sides are numbers, else strings. Logic is SQL's three-valued one: a comparison with a
//! missing property is unknown, and only an expression that is true matches (as in RocketMQ).
//! Keywords are case-insensitive. A bad expression is refused when parsed, never at a message.

use std::fmt;

/// The longest expression accepted, and how deeply it may nest.
pub const EXPRESSION_BYTES_MAX: usize = 4096;
const DEPTH_MAX: usize = 64;

/// A parsed filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// Every message.
    All,
    /// Messages with one of these tags.
    Tags(Vec<String>),
    Sql(Expr),
}

/// Why an expression was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("filter expression {expression:?}: {reason}")]
pub struct FilterError {
    pub expression: String,
    pub reason: String,
}

impl Filter {
    /// A tag expression: `*` or empty for every message, else tags joined by `||`.
    pub fn tags(expression: &str) -> Result<Filter, FilterError> {
        let text = expression.trim();
        if text.is_empty() || text == "*" {
            return Ok(Filter::All);
        }
        let tags: Vec<String> = text.split("||").map(|t| t.trim().to_owned()).collect();
        if tags.iter().any(|t| t.is_empty() || t == "*") {
            return Err(refused(expression, "not a tag expression (TagA||TagB, or *)"));
        }
        Ok(Filter::Tags(tags))
    }

    /// An SQL92 expression (see the module documentation).
    pub fn sql(expression: &str) -> Result<Filter, FilterError> {
        if expression.len() > EXPRESSION_BYTES_MAX {
            return Err(refused(expression, format!("{} bytes, over the limit of {EXPRESSION_BYTES_MAX}", expression.len())));
        }
        let tokens = tokenize(expression).map_err(|reason| refused(expression, reason))?;
        let mut parser = Parser { tokens, at: 0, depth: 0 };
        let expr = parser.or().map_err(|reason| refused(expression, reason))?;
        if let Some(t) = parser.tokens.get(parser.at) {
            return Err(refused(expression, format!("unexpected {t} after the expression")));
        }
        Ok(Filter::Sql(expr))
    }

    /// Whether a message with `tag` and user `properties` passes.
    pub fn matches(&self, tag: Option<&str>, properties: &[(String, String)]) -> bool {
        match self {
            Filter::All => true,
            Filter::Tags(tags) => tag.is_some_and(|t| tags.iter().any(|x| x == t)),
            Filter::Sql(e) => e.eval(&Message { tag, properties }) == Some(true),
        }
    }
}

fn refused(expression: &str, reason: impl Into<String>) -> FilterError {
    let shown: String = expression.chars().take(256).collect();
    FilterError { expression: shown, reason: reason.into() }
}

/// An SQL filter's syntax tree.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Or(Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Bool(bool),
    Compare(Operand, CompareOp, Operand),
    Between { value: Operand, low: Operand, high: Operand, negated: bool },
    In { value: Operand, set: Vec<Operand>, negated: bool },
    IsNull { value: Operand, negated: bool },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    Property(String),
    Number(f64),
    Text(String),
    Null,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

/// What an expression is evaluated against.
struct Message<'a> {
    tag: Option<&'a str>,
    properties: &'a [(String, String)],
}

/// A value during evaluation: a property's string, or a constant.
#[derive(Debug, Clone, PartialEq)]
enum Value<'a> {
    Text(std::borrow::Cow<'a, str>),
    Number(f64),
}

impl Value<'_> {
    fn number(&self) -> Option<f64> {
        match self {
            Value::Number(n) => Some(*n),
            Value::Text(t) => t.trim().parse::<f64>().ok().filter(|n| n.is_finite()),
        }
    }
}

impl Operand {
    fn value<'a>(&'a self, m: &Message<'a>) -> Option<Value<'a>> {
        match self {
            Operand::Property(name) if name.eq_ignore_ascii_case("TAGS") => m.tag.map(|t| Value::Text(t.into())),
            Operand::Property(name) => m.properties.iter().find(|(k, _)| k == name).map(|(_, v)| Value::Text(v.as_str().into())),
            Operand::Number(n) => Some(Value::Number(*n)),
            Operand::Text(t) => Some(Value::Text(t.as_str().into())),
            Operand::Null => None,
        }
    }
}

impl Expr {
    /// SQL's three-valued logic: `None` is unknown.
    fn eval(&self, m: &Message<'_>) -> Option<bool> {
        match self {
            Expr::Bool(b) => Some(*b),
            Expr::Not(e) => e.eval(m).map(|b| !b),
            Expr::And(a, b) => match (a.eval(m), b.eval(m)) {
                (Some(false), _) | (_, Some(false)) => Some(false),
                (Some(true), Some(true)) => Some(true),
                _ => None,
            },
            Expr::Or(a, b) => match (a.eval(m), b.eval(m)) {
                (Some(true), _) | (_, Some(true)) => Some(true),
                (Some(false), Some(false)) => Some(false),
                _ => None,
            },
            Expr::Compare(a, op, b) => compare(&a.value(m)?, *op, &b.value(m)?),
            Expr::Between { value, low, high, negated } => {
                let (v, lo, hi) = (value.value(m)?.number()?, low.value(m)?.number()?, high.value(m)?.number()?);
                Some((lo <= v && v <= hi) != *negated)
            }
            Expr::In { value, set, negated } => {
                let v = value.value(m)?;
                let found = set.iter().filter_map(|c| c.value(m)).any(|c| compare(&v, CompareOp::Eq, &c) == Some(true));
                Some(found != *negated)
            }
            Expr::IsNull { value, negated } => Some(value.value(m).is_none() != *negated),
        }
    }
}

fn compare(a: &Value<'_>, op: CompareOp, b: &Value<'_>) -> Option<bool> {
    let numbers = a.number().zip(b.number());
    let ordering = match (op, numbers, a, b) {
        (_, Some((x, y)), _, _) => x.partial_cmp(&y)?,
        (CompareOp::Eq | CompareOp::Ne, None, Value::Text(x), Value::Text(y)) => x.cmp(y),
        // Equality of a number and a string that is not one: they differ.
        (CompareOp::Eq, None, _, _) => return Some(false),
        (CompareOp::Ne, None, _, _) => return Some(true),
        // An ordering of values that are not both numbers is unknown.
        _ => return None,
    };
    use std::cmp::Ordering::{Equal, Greater, Less};
    Some(match op {
        CompareOp::Eq => ordering == Equal,
        CompareOp::Ne => ordering != Equal,
        CompareOp::Gt => ordering == Greater,
        CompareOp::Ge => ordering != Less,
        CompareOp::Lt => ordering == Less,
        CompareOp::Le => ordering != Greater,
    })
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Number(f64),
    Text(String),
    Op(&'static str),
    LParen,
    RParen,
    Comma,
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::Ident(s) => write!(f, "{s}"),
            Token::Number(n) => write!(f, "{n}"),
            Token::Text(s) => write!(f, "'{s}'"),
            Token::Op(o) => write!(f, "{o}"),
            Token::LParen => f.write_str("("),
            Token::RParen => f.write_str(")"),
            Token::Comma => f.write_str(","),
        }
    }
}

fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            _ if c.is_whitespace() => i += 1,
            '(' | ')' | ',' => {
                out.push(match c {
                    '(' => Token::LParen,
                    ')' => Token::RParen,
                    _ => Token::Comma,
                });
                i += 1;
            }
            '\'' => {
                let mut s = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err("a string constant is not closed".into()),
                        Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                            s.push('\'');
                            i += 2;
                        }
                        Some('\'') => {
                            i += 1;
                            break;
                        }
                        Some(&ch) => {
                            s.push(ch);
                            i += 1;
                        }
                    }
                }
                out.push(Token::Text(s));
            }
            '=' => {
                out.push(Token::Op("="));
                i += 1;
            }
            '<' | '>' | '!' => {
                let two: String = chars[i..chars.len().min(i + 2)].iter().collect();
                let op = match two.as_str() {
                    "<=" => "<=",
                    ">=" => ">=",
                    "<>" | "!=" => "<>",
                    _ if c == '<' => "<",
                    _ if c == '>' => ">",
                    _ => return Err(format!("unexpected {c:?} at character {i}")),
                };
                i += if matches!(op, "<=" | ">=" | "<>") { 2 } else { 1 };
                out.push(Token::Op(op));
            }
            _ if c.is_ascii_digit() || (c == '-' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit() || *d == '.')) || c == '.' => {
                let start = i;
                i += 1;
                while chars.get(i).is_some_and(|d| d.is_ascii_digit() || *d == '.' || *d == 'e' || *d == 'E') {
                    i += 1;
                }
                let literal: String = chars[start..i].iter().collect();
                let n = literal.parse::<f64>().ok().filter(|n| n.is_finite()).ok_or_else(|| format!("{literal:?} is not a number"))?;
                out.push(Token::Number(n));
            }
            _ if c.is_alphabetic() || c == '_' || c == '$' => {
                let start = i;
                while chars.get(i).is_some_and(|d| d.is_alphanumeric() || matches!(d, '_' | '$' | '.' | '-')) {
                    i += 1;
                }
                out.push(Token::Ident(chars[start..i].iter().collect()));
            }
            _ => return Err(format!("unexpected {c:?} at character {i}")),
        }
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn keyword(&self, word: &str) -> bool {
        matches!(self.peek(), Some(Token::Ident(w)) if w.eq_ignore_ascii_case(word))
    }

    fn eat_keyword(&mut self, word: &str) -> bool {
        let found = self.keyword(word);
        if found {
            self.at += 1;
        }
        found
    }

    fn expect_keyword(&mut self, word: &str) -> Result<(), String> {
        if self.eat_keyword(word) { Ok(()) } else { Err(format!("expected {word}, found {}", self.found())) }
    }

    fn found(&self) -> String {
        self.peek().map_or_else(|| "the end".to_owned(), |t| t.to_string())
    }

    fn nested<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T, String>) -> Result<T, String> {
        self.depth += 1;
        if self.depth > DEPTH_MAX {
            return Err(format!("nested deeper than {DEPTH_MAX}"));
        }
        let r = f(self);
        self.depth -= 1;
        r
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut e = self.and()?;
        while self.eat_keyword("OR") {
            e = Expr::Or(Box::new(e), Box::new(self.and()?));
        }
        Ok(e)
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut e = self.not()?;
        while self.eat_keyword("AND") {
            e = Expr::And(Box::new(e), Box::new(self.not()?));
        }
        Ok(e)
    }

    fn not(&mut self) -> Result<Expr, String> {
        if self.eat_keyword("NOT") {
            return self.nested(|p| Ok(Expr::Not(Box::new(p.not()?))));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr, String> {
        if self.peek() == Some(&Token::LParen) {
            self.at += 1;
            let e = self.nested(Self::or)?;
            if self.peek() != Some(&Token::RParen) {
                return Err(format!("expected ), found {}", self.found()));
            }
            self.at += 1;
            return Ok(e);
        }
        if self.eat_keyword("TRUE") {
            return Ok(Expr::Bool(true));
        }
        if self.eat_keyword("FALSE") {
            return Ok(Expr::Bool(false));
        }
        let value = self.operand()?;
        if self.eat_keyword("IS") {
            let negated = self.eat_keyword("NOT");
            self.expect_keyword("NULL")?;
            return Ok(Expr::IsNull { value, negated });
        }
        let negated = self.eat_keyword("NOT");
        if self.eat_keyword("BETWEEN") {
            let low = self.operand()?;
            self.expect_keyword("AND")?;
            let high = self.operand()?;
            return Ok(Expr::Between { value, low, high, negated });
        }
        if self.eat_keyword("IN") {
            if self.peek() != Some(&Token::LParen) {
                return Err(format!("expected ( after IN, found {}", self.found()));
            }
            self.at += 1;
            let mut set = vec![self.operand()?];
            while self.peek() == Some(&Token::Comma) {
                self.at += 1;
                set.push(self.operand()?);
            }
            if self.peek() != Some(&Token::RParen) {
                return Err(format!("expected ) closing IN, found {}", self.found()));
            }
            self.at += 1;
            return Ok(Expr::In { value, set, negated });
        }
        if negated {
            return Err(format!("expected BETWEEN or IN after NOT, found {}", self.found()));
        }
        let op = match self.peek() {
            Some(Token::Op("=")) => CompareOp::Eq,
            Some(Token::Op("<>")) => CompareOp::Ne,
            Some(Token::Op(">")) => CompareOp::Gt,
            Some(Token::Op(">=")) => CompareOp::Ge,
            Some(Token::Op("<")) => CompareOp::Lt,
            Some(Token::Op("<=")) => CompareOp::Le,
            _ => return Err(format!("expected a comparison, found {}", self.found())),
        };
        self.at += 1;
        let right = self.operand()?;
        Ok(Expr::Compare(value, op, right))
    }

    fn operand(&mut self) -> Result<Operand, String> {
        let operand = match self.peek() {
            Some(Token::Number(n)) => Operand::Number(*n),
            Some(Token::Text(s)) => Operand::Text(s.clone()),
            Some(Token::Ident(w)) if w.eq_ignore_ascii_case("NULL") => Operand::Null,
            Some(Token::Ident(w)) if ["AND", "OR", "NOT", "IS", "IN", "BETWEEN"].iter().any(|k| w.eq_ignore_ascii_case(k)) => {
                return Err(format!("expected a property or a constant, found {w}"));
            }
            Some(Token::Ident(w)) => Operand::Property(w.clone()),
            _ => return Err(format!("expected a property or a constant, found {}", self.found())),
        };
        self.at += 1;
        Ok(operand)
    }
}

#[cfg(test)]
mod tests;
