//! Splits an expression into tokens.
//!
//! The lexer never fails: a character that starts no token becomes an [`TokenKind::Invalid`] token
//! of its own, which the parser then refuses with DynamoDB's `Syntax error; token: "$"` message.
//! Every token keeps its byte span so that the parser can quote the text `near` an error exactly
//! as written, white space included.

/// What a token is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TokenKind {
    /// An attribute or function name: a letter or `_`, then letters, digits and `_`.
    Identifier,
    /// `#name`: an expression attribute name placeholder.
    NamePlaceholder,
    /// `:name`: an expression attribute value placeholder.
    ValuePlaceholder,
    /// A list index: `0`, or a non-zero digit followed by digits.
    Number,
    /// One of the grammar's keywords (case-insensitive).
    Keyword(Keyword),
    Equal,
    NotEqual,
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
    OpenParen,
    CloseParen,
    OpenBracket,
    CloseBracket,
    Comma,
    Dot,
    Plus,
    Minus,
    /// A character that starts no token.
    Invalid,
    /// The end of the expression.
    End,
}

/// The grammar's keywords. They cannot be attribute names, not even reserved ones: DynamoDB
/// answers them with a syntax error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Keyword {
    And,
    Or,
    Not,
    Between,
    In,
    Set,
    Remove,
    Add,
    Delete,
}

impl Keyword {
    fn parse(word: &str) -> Option<Keyword> {
        const KEYWORDS: [(&str, Keyword); 9] = [
            ("AND", Keyword::And),
            ("OR", Keyword::Or),
            ("NOT", Keyword::Not),
            ("BETWEEN", Keyword::Between),
            ("IN", Keyword::In),
            ("SET", Keyword::Set),
            ("REMOVE", Keyword::Remove),
            ("ADD", Keyword::Add),
            ("DELETE", Keyword::Delete),
        ];
        KEYWORDS.iter().find(|(text, _)| text.eq_ignore_ascii_case(word)).map(|(_, keyword)| *keyword)
    }
}

/// One token and where it is in the expression (byte offsets, `start..end`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Token {
    pub kind: TokenKind,
    pub start: usize,
    pub end: usize,
}

fn is_name_start(byte: u8) -> bool {
    byte.is_ascii_alphabetic() || byte == b'_'
}

fn is_name_continue(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_'
}

/// Splits `text` into tokens; the last one is always [`TokenKind::End`].
pub(crate) fn tokenize(text: &str) -> Vec<Token> {
    let bytes = text.as_bytes();
    let mut tokens = Vec::new();
    let mut position = 0;
    while position < bytes.len() {
        let byte = bytes[position];
        if matches!(byte, b' ' | b'\t' | b'\n' | b'\r') {
            position += 1;
            continue;
        }
        let start = position;
        let kind = match byte {
            b'=' => single(&mut position, TokenKind::Equal),
            b'<' => match bytes.get(position + 1) {
                Some(b'>') => double(&mut position, TokenKind::NotEqual),
                Some(b'=') => double(&mut position, TokenKind::LessOrEqual),
                _ => single(&mut position, TokenKind::Less),
            },
            b'>' => match bytes.get(position + 1) {
                Some(b'=') => double(&mut position, TokenKind::GreaterOrEqual),
                _ => single(&mut position, TokenKind::Greater),
            },
            b'(' => single(&mut position, TokenKind::OpenParen),
            b')' => single(&mut position, TokenKind::CloseParen),
            b'[' => single(&mut position, TokenKind::OpenBracket),
            b']' => single(&mut position, TokenKind::CloseBracket),
            b',' => single(&mut position, TokenKind::Comma),
            b'.' => single(&mut position, TokenKind::Dot),
            b'+' => single(&mut position, TokenKind::Plus),
            b'-' => single(&mut position, TokenKind::Minus),
            b'#' | b':' => {
                position += 1;
                let name_start = position;
                while position < bytes.len() && is_name_continue(bytes[position]) {
                    position += 1;
                }
                if position == name_start {
                    TokenKind::Invalid
                } else if byte == b'#' {
                    TokenKind::NamePlaceholder
                } else {
                    TokenKind::ValuePlaceholder
                }
            }
            b'0' => single(&mut position, TokenKind::Number),
            b'1'..=b'9' => {
                while position < bytes.len() && bytes[position].is_ascii_digit() {
                    position += 1;
                }
                TokenKind::Number
            }
            _ if is_name_start(byte) => {
                while position < bytes.len() && is_name_continue(bytes[position]) {
                    position += 1;
                }
                match Keyword::parse(&text[start..position]) {
                    Some(keyword) => TokenKind::Keyword(keyword),
                    None => TokenKind::Identifier,
                }
            }
            _ => {
                // One whole character, so that the error quotes it intact.
                position += text[position..].chars().next().map_or(1, char::len_utf8);
                TokenKind::Invalid
            }
        };
        tokens.push(Token { kind, start, end: position });
    }
    tokens.push(Token { kind: TokenKind::End, start: bytes.len(), end: bytes.len() });
    tokens
}

fn single(position: &mut usize, kind: TokenKind) -> TokenKind {
    *position += 1;
    kind
}

fn double(position: &mut usize, kind: TokenKind) -> TokenKind {
    *position += 2;
    kind
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<TokenKind> {
        tokenize(text).into_iter().map(|token| token.kind).collect()
    }

    #[test]
    fn splits_every_token_kind() {
        use TokenKind::*;
        assert_eq!(
            kinds("a.#b[10] <> :c AnD <= >= < > = ( ) , + - $ 00"),
            vec![
                Identifier,
                Dot,
                NamePlaceholder,
                OpenBracket,
                Number,
                CloseBracket,
                NotEqual,
                ValuePlaceholder,
                Keyword(super::Keyword::And),
                LessOrEqual,
                GreaterOrEqual,
                Less,
                Greater,
                Equal,
                OpenParen,
                CloseParen,
                Comma,
                Plus,
                Minus,
                Invalid,
                Number,
                Number,
                End
            ]
        );
        assert_eq!(kinds("# : é"), vec![Invalid, Invalid, Invalid, End]);
        assert_eq!(tokenize("é").first().map(|token| token.end), Some(2));
    }
}
