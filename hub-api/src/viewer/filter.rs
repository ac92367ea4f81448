//! The `/filter` endpoint's `where`: a parsed subset of SQL's WHERE, evaluated
//! here over each row (no text ever reaches a database). Grammar:
//!
//! ```text
//! expr       := and ("OR" and)*
//! and        := unary ("AND" unary)*
//! unary      := "NOT" unary | "(" expr ")" | comparison
//! comparison := column op literal | column "IS" ["NOT"] "NULL"
//! column     := identifier | "double-quoted name" ("" escapes a quote)
//! op         := = | != | <> | < | <= | > | >=
//! literal    := 'single-quoted string' ('' escapes a quote) | number | TRUE | FALSE
//! ```
//! Keywords are case-insensitive. At most [`MAX_LEN`] characters and
//! [`MAX_DEPTH`] levels of nesting. A string compares with strings, a number
//! with numbers, a boolean with booleans; any other pairing (and NULL) is
//! false, as SQL's unknown is.

use serde_json::Value;
use std::cmp::Ordering;

/// Longest `where` accepted.
pub const MAX_LEN: usize = 2000;
/// Deepest nesting of parentheses and NOTs.
pub const MAX_DEPTH: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Lit {
    Str(String),
    Num(f64),
    Bool(bool),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Cmp(String, Op, Lit),
    IsNull(String, bool),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(f64),
    Op(Op),
    LParen,
    RParen,
}

fn lex(s: &str) -> Result<Vec<Tok>, String> {
    let b: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    while i < b.len() {
        let c = b[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                out.push(Tok::LParen);
                i += 1
            }
            ')' => {
                out.push(Tok::RParen);
                i += 1
            }
            '\'' | '"' => {
                let q = c;
                let mut v = String::new();
                i += 1;
                loop {
                    match b.get(i) {
                        None => return Err(format!("unterminated {q}quoted{q} text")),
                        Some(&d) if d == q && b.get(i + 1) == Some(&q) => {
                            v.push(q);
                            i += 2;
                        }
                        Some(&d) if d == q => {
                            i += 1;
                            break;
                        }
                        Some(&d) => {
                            v.push(d);
                            i += 1;
                        }
                    }
                }
                out.push(if q == '"' { Tok::Ident(v) } else { Tok::Str(v) });
            }
            '=' => {
                out.push(Tok::Op(Op::Eq));
                i += 1
            }
            '!' if b.get(i + 1) == Some(&'=') => {
                out.push(Tok::Op(Op::Ne));
                i += 2
            }
            '<' | '>' => {
                let next = b.get(i + 1).copied();
                let (op, n) = match (c, next) {
                    ('<', Some('=')) => (Op::Le, 2),
                    ('<', Some('>')) => (Op::Ne, 2),
                    ('<', _) => (Op::Lt, 1),
                    ('>', Some('=')) => (Op::Ge, 2),
                    _ => (Op::Gt, 1),
                };
                out.push(Tok::Op(op));
                i += n
            }
            c if c.is_ascii_digit() || c == '-' || c == '.' => {
                let start = i;
                i += 1;
                while i < b.len()
                    && (b[i].is_ascii_alphanumeric()
                        || b[i] == '.'
                        || ((b[i] == '-' || b[i] == '+') && matches!(b[i - 1], 'e' | 'E')))
                {
                    i += 1;
                }
                let t: String = b[start..i].iter().collect();
                let n: f64 = t.parse().map_err(|_| format!("{t:?} is not a number"))?;
                if !n.is_finite() {
                    return Err(format!("{t:?} is not a finite number"));
                }
                out.push(Tok::Num(n));
            }
            c if c.is_alphabetic() || c == '_' => {
                let start = i;
                while i < b.len() && (b[i].is_alphanumeric() || b[i] == '_') {
                    i += 1;
                }
                out.push(Tok::Ident(b[start..i].iter().collect()));
            }
            c => return Err(format!("unexpected character {c:?}")),
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
    depth: usize,
}

fn is_kw(t: Option<&Tok>, kw: &str) -> bool {
    matches!(t, Some(Tok::Ident(s)) if s.eq_ignore_ascii_case(kw))
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }
    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }
    fn deeper(&mut self) -> Result<(), String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(format!("nested deeper than {MAX_DEPTH} levels"));
        }
        Ok(())
    }
    fn expr(&mut self) -> Result<Expr, String> {
        let mut e = self.and()?;
        while is_kw(self.peek(), "or") {
            self.pos += 1;
            e = Expr::Or(Box::new(e), Box::new(self.and()?));
        }
        Ok(e)
    }
    fn and(&mut self) -> Result<Expr, String> {
        let mut e = self.unary()?;
        while is_kw(self.peek(), "and") {
            self.pos += 1;
            e = Expr::And(Box::new(e), Box::new(self.unary()?));
        }
        Ok(e)
    }
    fn unary(&mut self) -> Result<Expr, String> {
        if is_kw(self.peek(), "not") {
            self.pos += 1;
            self.deeper()?;
            let e = Expr::Not(Box::new(self.unary()?));
            self.depth -= 1;
            return Ok(e);
        }
        if self.peek() == Some(&Tok::LParen) {
            self.pos += 1;
            self.deeper()?;
            let e = self.expr()?;
            self.depth -= 1;
            if self.next() != Some(Tok::RParen) {
                return Err("expected )".into());
            }
            return Ok(e);
        }
        let col = match self.next() {
            Some(Tok::Ident(c)) => c,
            Some(t) => return Err(format!("expected a column name, found {t:?}")),
            None => return Err("expected a column name, found the end".into()),
        };
        if is_kw(self.peek(), "is") {
            self.pos += 1;
            let not = is_kw(self.peek(), "not");
            if not {
                self.pos += 1;
            }
            if !is_kw(self.next().as_ref(), "null") {
                return Err("expected NULL after IS".into());
            }
            return Ok(Expr::IsNull(col, !not));
        }
        let op = match self.next() {
            Some(Tok::Op(op)) => op,
            _ => {
                return Err(format!(
                    "expected a comparison (=, !=, <, <=, >, >=) after {col}"
                ))
            }
        };
        let lit = match self.next() {
            Some(Tok::Str(s)) => Lit::Str(s),
            Some(Tok::Num(n)) => Lit::Num(n),
            Some(Tok::Ident(k)) if k.eq_ignore_ascii_case("true") => Lit::Bool(true),
            Some(Tok::Ident(k)) if k.eq_ignore_ascii_case("false") => Lit::Bool(false),
            _ => {
                return Err(format!(
                    "expected a literal ('text', number, true, false) after {col}"
                ))
            }
        };
        Ok(Expr::Cmp(col, op, lit))
    }
}

/// Parses a `where`; Err is the reason, for a 400 naming the parameter.
pub fn parse(s: &str) -> Result<Expr, String> {
    if s.chars().count() > MAX_LEN {
        return Err(format!("longer than {MAX_LEN} characters"));
    }
    let toks = lex(s)?;
    if toks.is_empty() {
        return Err("empty".into());
    }
    let mut p = Parser {
        toks,
        pos: 0,
        depth: 0,
    };
    let e = p.expr()?;
    if p.pos != p.toks.len() {
        return Err(format!("unexpected {:?}", p.toks[p.pos]));
    }
    Ok(e)
}

impl Expr {
    /// Every column the expression names.
    pub fn columns(&self, out: &mut Vec<String>) {
        match self {
            Expr::Cmp(c, _, _) | Expr::IsNull(c, _) => out.push(c.clone()),
            Expr::And(a, b) | Expr::Or(a, b) => {
                a.columns(out);
                b.columns(out);
            }
            Expr::Not(a) => a.columns(out),
        }
    }

    /// Whether a row (its cells by column) satisfies the expression.
    pub fn eval(&self, get: &dyn Fn(&str) -> Value) -> bool {
        match self {
            Expr::And(a, b) => a.eval(get) && b.eval(get),
            Expr::Or(a, b) => a.eval(get) || b.eval(get),
            Expr::Not(a) => !a.eval(get),
            Expr::IsNull(c, null) => get(c).is_null() == *null,
            Expr::Cmp(c, op, lit) => {
                let v = get(c);
                let ord = match (&v, lit) {
                    (Value::String(s), Lit::Str(l)) => Some(s.as_str().cmp(l.as_str())),
                    (Value::Number(n), Lit::Num(l)) => n.as_f64().and_then(|x| x.partial_cmp(l)),
                    (Value::Bool(b), Lit::Bool(l)) => Some(b.cmp(l)),
                    _ => None,
                };
                match ord {
                    None => false,
                    Some(o) => match op {
                        Op::Eq => o == Ordering::Equal,
                        Op::Ne => o != Ordering::Equal,
                        Op::Lt => o == Ordering::Less,
                        Op::Le => o != Ordering::Greater,
                        Op::Gt => o == Ordering::Greater,
                        Op::Ge => o != Ordering::Less,
                    },
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn eval(w: &str, row: Value) -> bool {
        let e = parse(w).unwrap();
        e.eval(&|c| row.get(c).cloned().unwrap_or(Value::Null))
    }

    #[test]
    fn parses_and_evaluates() {
        let row = json!({"name": "it's", "n": 3, "ok": true, "x": null, "my col": 1.5});
        assert!(eval("n = 3", row.clone()));
        assert!(eval("n >= 3 AND n < 4", row.clone()));
        assert!(eval("name = 'it''s' or n = 0", row.clone()));
        assert!(eval("\"my col\" > 1", row.clone()));
        assert!(eval(
            "ok = TRUE and x IS NULL and name IS NOT NULL",
            row.clone()
        ));
        assert!(eval("NOT (n != 3)", row.clone()));
        assert!(!eval("n = '3'", row.clone()));
        assert!(eval("n <> 4 and n > -1e3", row));
        for bad in [
            "",
            "n",
            "n =",
            "n = 3 3",
            "n = 'x",
            "(n = 1",
            "n ~ 1",
            "1 = n",
            "n = 3; DROP TABLE x",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        let deep = format!("{}n = 1{}", "(".repeat(40), ")".repeat(40));
        assert!(parse(&deep).unwrap_err().contains("nested"));
        let mut cols = Vec::new();
        parse("a = 1 or (b = 2 and c is null)")
            .unwrap()
            .columns(&mut cols);
        assert_eq!(cols, ["a", "b", "c"]);
    }
}
