//! The parser: tokens to a syntax tree that still holds placeholders and names as written.
//!
//! Conditions and operands share a prefix (`(a) = :v` against `(a = :v)`; `size(a)` is an
//! operand, `attribute_exists(a)` a condition), so the condition parser reads a unified
//! [`Expr`] and decides what it was only when it sees what follows: a comparator makes the left
//! side an operand, anything else makes it a condition. That needs no backtracking, and reports a
//! syntax error at the first token that cannot continue, as DynamoDB's parser does.
//!
//! Function calls are kept by name; whether a name is a function, and whether the function may
//! appear where it was written, is checked later, as DynamoDB reports those after syntax errors.
//! Nesting (parentheses, `NOT`, function arguments) is limited to [`NESTING_DEPTH_MAX`] levels
//! so that a hostile expression cannot overflow the stack.

use crate::error::DynamoError;

use super::lexer::{Keyword, Token, TokenKind, tokenize};

/// Deepest nesting of parentheses, `NOT`s and function calls the parser follows, so that the
/// recursion (parsing, resolution, evaluation, drop) stays far from the end of a 2 MB stack even
/// in debug builds. DynamoDB itself accepts deeper nesting (up to its 300-operator limit); real
/// expressions stay far below. Past the limit we answer with the message DynamoDB gives for the
/// usual causes of deep nesting: redundant parentheses, or too many operators.
pub const NESTING_DEPTH_MAX: usize = 64;

/// One element of a document path as written.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum RawElement {
    /// A plain attribute name.
    Name(String),
    /// A `#name` placeholder.
    Placeholder(String),
    /// A list index, as its digits (it may be too large for any integer type).
    Index(String),
}

/// A document path as written: a name or placeholder, then `.name` and `[index]` steps.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct RawPath(pub Vec<RawElement>);

/// An operand as written.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum RawOperand {
    Path(RawPath),
    /// A `:name` placeholder.
    Value(String),
    Call(String, Vec<RawOperand>),
    Paren(Box<RawOperand>),
    Plus(Box<RawOperand>, Box<RawOperand>),
    Minus(Box<RawOperand>, Box<RawOperand>),
}

/// The six comparators.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Comparator {
    /// `=`
    Equal,
    /// `<>`
    NotEqual,
    /// `<`
    Less,
    /// `<=`
    LessOrEqual,
    /// `>`
    Greater,
    /// `>=`
    GreaterOrEqual,
}

impl Comparator {
    /// The comparator as written in expressions.
    pub fn as_str(self) -> &'static str {
        match self {
            Comparator::Equal => "=",
            Comparator::NotEqual => "<>",
            Comparator::Less => "<",
            Comparator::LessOrEqual => "<=",
            Comparator::Greater => ">",
            Comparator::GreaterOrEqual => ">=",
        }
    }
}

/// A condition as written.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum RawCondition {
    Compare(Comparator, RawOperand, RawOperand),
    Between(RawOperand, RawOperand, RawOperand),
    In(RawOperand, Vec<RawOperand>),
    Call(String, Vec<RawOperand>),
    Not(Box<RawCondition>),
    And(Box<RawCondition>, Box<RawCondition>),
    Or(Box<RawCondition>, Box<RawCondition>),
    Paren(Box<RawCondition>),
}

/// One action of an update expression as written, in textual order.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum RawAction {
    Set(RawPath, RawOperand),
    Remove(RawPath),
    Add(RawPath, String),
    Delete(RawPath, String),
}

/// An update expression as written.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct RawUpdate {
    /// Every action, in textual order.
    pub actions: Vec<RawAction>,
    /// The first clause keyword that appeared twice (`"SET"`, …), if any.
    pub repeated_clause: Option<&'static str>,
}

/// Which expression parameter is being parsed; names the expression in error messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExpressionKind {
    /// `ConditionExpression`
    Condition,
    /// `FilterExpression`
    Filter,
    /// `KeyConditionExpression`
    KeyCondition,
    /// `UpdateExpression`
    Update,
    /// `ProjectionExpression`
    Projection,
}

impl ExpressionKind {
    /// The request parameter's name.
    pub fn parameter_name(self) -> &'static str {
        match self {
            ExpressionKind::Condition => "ConditionExpression",
            ExpressionKind::Filter => "FilterExpression",
            ExpressionKind::KeyCondition => "KeyConditionExpression",
            ExpressionKind::Update => "UpdateExpression",
            ExpressionKind::Projection => "ProjectionExpression",
        }
    }

    /// A ValidationException about this expression: `Invalid <Parameter>: <detail>`.
    pub(crate) fn error(self, detail: impl AsRef<str>) -> DynamoError {
        DynamoError::validation(format!("Invalid {}: {}", self.parameter_name(), detail.as_ref()))
    }
}

/// The left side of a comparison before we know whether it is an operand or a condition.
enum Expr {
    Operand(RawOperand),
    Call(String, Vec<RawOperand>),
    Condition(RawCondition),
    Paren(Box<Expr>),
}

impl Expr {
    fn is_operand(&self) -> bool {
        match self {
            Expr::Operand(_) | Expr::Call(..) => true,
            Expr::Condition(_) => false,
            Expr::Paren(inner) => inner.is_operand(),
        }
    }

    fn is_condition(&self) -> bool {
        match self {
            Expr::Condition(_) | Expr::Call(..) => true,
            Expr::Operand(_) => false,
            Expr::Paren(inner) => inner.is_condition(),
        }
    }

    fn into_operand(self) -> RawOperand {
        match self {
            Expr::Operand(operand) => operand,
            Expr::Call(name, arguments) => RawOperand::Call(name, arguments),
            Expr::Paren(inner) => RawOperand::Paren(Box::new(inner.into_operand())),
            Expr::Condition(_) => unreachable!("checked by is_operand"),
        }
    }

    fn into_condition(self) -> RawCondition {
        match self {
            Expr::Condition(condition) => condition,
            Expr::Call(name, arguments) => RawCondition::Call(name, arguments),
            Expr::Paren(inner) => RawCondition::Paren(Box::new(inner.into_condition())),
            Expr::Operand(_) => unreachable!("checked by is_condition"),
        }
    }
}

struct Parser<'a> {
    text: &'a str,
    tokens: Vec<Token>,
    position: usize,
    depth: usize,
    kind: ExpressionKind,
}

type Parsed<T> = Result<T, DynamoError>;

impl<'a> Parser<'a> {
    fn new(text: &'a str, kind: ExpressionKind) -> Parser<'a> {
        Parser { text, tokens: tokenize(text), position: 0, depth: 0, kind }
    }

    fn peek(&self) -> TokenKind {
        self.tokens[self.position].kind
    }

    fn peek_at(&self, offset: usize) -> TokenKind {
        self.tokens.get(self.position + offset).map_or(TokenKind::End, |token| token.kind)
    }

    fn text_of(&self, index: usize) -> &'a str {
        let token = self.tokens[index];
        &self.text[token.start..token.end]
    }

    fn bump(&mut self) -> Token {
        let token = self.tokens[self.position];
        if token.kind != TokenKind::End {
            self.position += 1;
        }
        token
    }

    /// DynamoDB's syntax error at the current token: the token, and the text from the token
    /// before it to the token after it.
    fn syntax_error(&self) -> DynamoError {
        let index = self.position;
        let token = self.tokens[index];
        let shown = if token.kind == TokenKind::End { "<EOF>" } else { self.text_of(index) };
        let near_start = if index == 0 { 0 } else { self.tokens[index - 1].start };
        let near_end = match self.tokens.get(index + 1) {
            Some(next) if token.kind != TokenKind::End && next.kind != TokenKind::End => next.end,
            _ => self.text.len(),
        };
        self.kind.error(format!("Syntax error; token: \"{}\", near: \"{}\"", shown, &self.text[near_start..near_end]))
    }

    fn expect(&mut self, kind: TokenKind) -> Parsed<Token> {
        if self.peek() == kind { Ok(self.bump()) } else { Err(self.syntax_error()) }
    }

    fn expect_end(&self) -> Parsed<()> {
        if self.peek() == TokenKind::End { Ok(()) } else { Err(self.syntax_error()) }
    }

    fn enter(&mut self) -> Parsed<()> {
        self.depth += 1;
        if self.depth > NESTING_DEPTH_MAX {
            // Past this depth every expression either nests parentheses directly (redundant) or
            // has more than 300 operators; report what DynamoDB would.
            let nested_parentheses = self.position >= 2
                && self.tokens[self.position - 1].kind == TokenKind::OpenParen
                && self.tokens[self.position - 2].kind == TokenKind::OpenParen;
            return Err(if nested_parentheses {
                self.kind.error("The expression has redundant parentheses;")
            } else {
                self.kind.error("The expression contains too many operators; operator count: 301")
            });
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }

    fn path(&mut self) -> Parsed<RawPath> {
        let mut elements = Vec::new();
        match self.peek() {
            TokenKind::Identifier => elements.push(RawElement::Name(self.text_of(self.position).to_string())),
            TokenKind::NamePlaceholder => {
                elements.push(RawElement::Placeholder(self.text_of(self.position).to_string()));
            }
            _ => return Err(self.syntax_error()),
        }
        self.bump();
        loop {
            match self.peek() {
                TokenKind::Dot => {
                    self.bump();
                    match self.peek() {
                        TokenKind::Identifier => {
                            elements.push(RawElement::Name(self.text_of(self.position).to_string()));
                        }
                        TokenKind::NamePlaceholder => {
                            elements.push(RawElement::Placeholder(self.text_of(self.position).to_string()));
                        }
                        _ => return Err(self.syntax_error()),
                    }
                    self.bump();
                }
                TokenKind::OpenBracket => {
                    self.bump();
                    let digits = self.expect(TokenKind::Number)?;
                    elements.push(RawElement::Index(self.text[digits.start..digits.end].to_string()));
                    self.expect(TokenKind::CloseBracket)?;
                }
                _ => return Ok(RawPath(elements)),
            }
        }
    }

    /// `name ( operand, … )` with the name already current.
    fn call(&mut self, arithmetic: bool) -> Parsed<(String, Vec<RawOperand>)> {
        let name = self.text_of(self.position).to_string();
        self.bump();
        self.expect(TokenKind::OpenParen)?;
        self.enter()?;
        let mut arguments = vec![self.operand(arithmetic)?];
        while self.peek() == TokenKind::Comma {
            self.bump();
            arguments.push(self.operand(arithmetic)?);
        }
        self.expect(TokenKind::CloseParen)?;
        self.leave();
        Ok((name, arguments))
    }

    /// An operand; with `arithmetic` (update expressions), `x + y` or `x - y`.
    fn operand(&mut self, arithmetic: bool) -> Parsed<RawOperand> {
        let left = self.operand_term(arithmetic)?;
        if !arithmetic {
            return Ok(left);
        }
        match self.peek() {
            TokenKind::Plus => {
                self.bump();
                Ok(RawOperand::Plus(Box::new(left), Box::new(self.operand_term(arithmetic)?)))
            }
            TokenKind::Minus => {
                self.bump();
                Ok(RawOperand::Minus(Box::new(left), Box::new(self.operand_term(arithmetic)?)))
            }
            _ => Ok(left),
        }
    }

    fn operand_term(&mut self, arithmetic: bool) -> Parsed<RawOperand> {
        match self.peek() {
            TokenKind::ValuePlaceholder => {
                let name = self.text_of(self.position).to_string();
                self.bump();
                Ok(RawOperand::Value(name))
            }
            TokenKind::Identifier if self.peek_at(1) == TokenKind::OpenParen => {
                let (name, arguments) = self.call(arithmetic)?;
                Ok(RawOperand::Call(name, arguments))
            }
            TokenKind::Identifier | TokenKind::NamePlaceholder => Ok(RawOperand::Path(self.path()?)),
            TokenKind::OpenParen => {
                self.bump();
                self.enter()?;
                let inner = self.operand(arithmetic)?;
                self.expect(TokenKind::CloseParen)?;
                self.leave();
                Ok(RawOperand::Paren(Box::new(inner)))
            }
            _ => Err(self.syntax_error()),
        }
    }

    /// `or := and (OR and)*`. Inside parentheses a bare operand may stand alone (`(a) = :v`).
    fn or(&mut self, in_paren: bool) -> Parsed<Expr> {
        let mut left = self.and(in_paren)?;
        while self.peek() == TokenKind::Keyword(Keyword::Or) {
            if !left.is_condition() {
                return Err(self.syntax_error());
            }
            self.bump();
            let right = self.and(false)?;
            left = Expr::Condition(RawCondition::Or(Box::new(left.into_condition()), Box::new(right.into_condition())));
        }
        Ok(left)
    }

    fn and(&mut self, in_paren: bool) -> Parsed<Expr> {
        let mut left = self.not(in_paren)?;
        while self.peek() == TokenKind::Keyword(Keyword::And) {
            if !left.is_condition() {
                return Err(self.syntax_error());
            }
            self.bump();
            let right = self.not(false)?;
            left =
                Expr::Condition(RawCondition::And(Box::new(left.into_condition()), Box::new(right.into_condition())));
        }
        Ok(left)
    }

    /// Returns a condition, or (only when `in_paren`) an operand that a caller may compare.
    fn not(&mut self, in_paren: bool) -> Parsed<Expr> {
        if self.peek() == TokenKind::Keyword(Keyword::Not) {
            self.bump();
            self.enter()?;
            let inner = self.not(false)?;
            self.leave();
            return Ok(Expr::Condition(RawCondition::Not(Box::new(inner.into_condition()))));
        }
        let left = self.comparison()?;
        if left.is_condition() || (in_paren && self.peek() == TokenKind::CloseParen) {
            Ok(left)
        } else {
            Err(self.syntax_error())
        }
    }

    /// A comparison, `BETWEEN`, `IN`, a function call, or a parenthesized condition or operand.
    fn comparison(&mut self) -> Parsed<Expr> {
        let left = match self.peek() {
            TokenKind::OpenParen => {
                self.bump();
                self.enter()?;
                let inner = self.or(true)?;
                self.expect(TokenKind::CloseParen)?;
                self.leave();
                Expr::Paren(Box::new(inner))
            }
            TokenKind::Identifier if self.peek_at(1) == TokenKind::OpenParen => {
                let (name, arguments) = self.call(false)?;
                Expr::Call(name, arguments)
            }
            _ => Expr::Operand(self.operand_term(false)?),
        };
        let comparator = match self.peek() {
            TokenKind::Equal => Comparator::Equal,
            TokenKind::NotEqual => Comparator::NotEqual,
            TokenKind::Less => Comparator::Less,
            TokenKind::LessOrEqual => Comparator::LessOrEqual,
            TokenKind::Greater => Comparator::Greater,
            TokenKind::GreaterOrEqual => Comparator::GreaterOrEqual,
            TokenKind::Keyword(Keyword::Between) => {
                if !left.is_operand() {
                    return Err(self.syntax_error());
                }
                self.bump();
                let low = self.operand(false)?;
                self.expect(TokenKind::Keyword(Keyword::And))?;
                let high = self.operand(false)?;
                return Ok(Expr::Condition(RawCondition::Between(left.into_operand(), low, high)));
            }
            TokenKind::Keyword(Keyword::In) => {
                if !left.is_operand() {
                    return Err(self.syntax_error());
                }
                self.bump();
                self.expect(TokenKind::OpenParen)?;
                let mut list = vec![self.operand(false)?];
                while self.peek() == TokenKind::Comma {
                    self.bump();
                    list.push(self.operand(false)?);
                }
                self.expect(TokenKind::CloseParen)?;
                return Ok(Expr::Condition(RawCondition::In(left.into_operand(), list)));
            }
            _ => return Ok(left),
        };
        if !left.is_operand() {
            return Err(self.syntax_error());
        }
        self.bump();
        let right = self.operand(false)?;
        Ok(Expr::Condition(RawCondition::Compare(comparator, left.into_operand(), right)))
    }
}

/// Refuses the empty expression with DynamoDB's message.
fn check_not_empty(text: &str, kind: ExpressionKind) -> Parsed<()> {
    if text.is_empty() { Err(kind.error("The expression can not be empty;")) } else { Ok(()) }
}

/// Parses a condition (also a filter or key condition).
pub(crate) fn parse_condition(text: &str, kind: ExpressionKind) -> Parsed<RawCondition> {
    check_not_empty(text, kind)?;
    let mut parser = Parser::new(text, kind);
    let expr = parser.or(false)?;
    parser.expect_end()?;
    Ok(expr.into_condition())
}

/// Parses a projection: comma-separated document paths.
pub(crate) fn parse_projection(text: &str) -> Parsed<Vec<RawPath>> {
    check_not_empty(text, ExpressionKind::Projection)?;
    let mut parser = Parser::new(text, ExpressionKind::Projection);
    let mut paths = vec![parser.path()?];
    while parser.peek() == TokenKind::Comma {
        parser.bump();
        paths.push(parser.path()?);
    }
    parser.expect_end()?;
    Ok(paths)
}

/// Parses an update expression: `SET`, `REMOVE`, `ADD` and `DELETE` clauses in any order.
pub(crate) fn parse_update(text: &str) -> Parsed<RawUpdate> {
    check_not_empty(text, ExpressionKind::Update)?;
    let mut parser = Parser::new(text, ExpressionKind::Update);
    let mut actions = Vec::new();
    let mut seen: Vec<&'static str> = Vec::new();
    let mut repeated_clause = None;
    loop {
        let TokenKind::Keyword(keyword) = parser.peek() else {
            return Err(parser.syntax_error());
        };
        let clause = match keyword {
            Keyword::Set => "SET",
            Keyword::Remove => "REMOVE",
            Keyword::Add => "ADD",
            Keyword::Delete => "DELETE",
            _ => return Err(parser.syntax_error()),
        };
        if seen.contains(&clause) {
            repeated_clause.get_or_insert(clause);
        }
        seen.push(clause);
        parser.bump();
        loop {
            let path = parser.path()?;
            let action = match keyword {
                Keyword::Set => {
                    parser.expect(TokenKind::Equal)?;
                    RawAction::Set(path, parser.operand(true)?)
                }
                Keyword::Remove => RawAction::Remove(path),
                _ => {
                    let value = parser.expect(TokenKind::ValuePlaceholder)?;
                    let name = text[value.start..value.end].to_string();
                    if keyword == Keyword::Add { RawAction::Add(path, name) } else { RawAction::Delete(path, name) }
                }
            };
            actions.push(action);
            if parser.peek() != TokenKind::Comma {
                break;
            }
            parser.bump();
        }
        if parser.peek() == TokenKind::End {
            return Ok(RawUpdate { actions, repeated_clause });
        }
    }
}
