//! Opaque tokens and random codes.
//!
//! Every token this server issues has the form `<prefix>_<random>_<checksum>` (DESIGN.md
//! "Tokens"):
//!
//! - `<prefix>`: three letters naming the [`TokenKind`] (`mat`, `mar`, `mct`, `mcr`, `mpt`);
//! - `<random>`: 30 characters drawn uniformly from the 62 [`BASE62`] characters, about 178.6 bits
//!   of entropy;
//! - `<checksum>`: the CRC-32 of `<prefix>_<random>` (the first 34 bytes, ASCII), 6 base62 digits.
//!
//! The checksum is not a security feature (anyone can compute it): it lets [`TokenKind::parse`]
//! reject typos, truncations and garbage before any database query. Tokens are stored as SHA-256
//! hashes ([`crate::crypto::sha256`]), never in plain text.
//!
//! Checksum encoding, exactly: CRC-32/ISO-HDLC (the zlib / IEEE 802.3 CRC-32 that `crc32fast`
//! computes: reflected polynomial `0xEDB88320`, initial value and final XOR `0xFFFFFFFF`; the
//! check value of `"123456789"` is `0xCBF43926`) over the bytes of `<prefix>_<random>`. The
//! resulting `u32` is written in base 62 with the digit alphabet [`BASE62`] (`0-9`, `A-Z`, `a-z`),
//! most significant digit first (big-endian), left-padded with `0` to exactly 6 digits
//! (`62^6 > 2^32`, so 6 always suffice: `0` is `000000`, `u32::MAX` is `4gfFC3`). The encoding is
//! canonical: a token is accepted only if its last 6 characters equal this encoding exactly.

use rand::RngCore;

/// The base62 alphabet, in digit order: `0-9`, then `A-Z`, then `a-z`.
pub const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// RFC 8628 §6.1's suggested user code alphabet: upper-case consonants only, so no vowels (no
/// accidental words) and no look-alikes (no `0`/`O`, `1`/`I`/`L`... digits are absent entirely).
pub const USER_CODE_ALPHABET: &[u8; 20] = b"BCDFGHJKLMNPQRSTVWXZ";

/// The number of characters of a user code, without the dash: 20^8 ≈ 2^34.6 possibilities, the
/// example of RFC 8628 §5.1 (brute force is bounded by the code's lifetime and rate limiting).
pub const USER_CODE_LEN: usize = 8;

const PREFIX_LEN: usize = 3;
const RANDOM_LEN: usize = 30;
const CHECKSUM_LEN: usize = 6;
/// Where the checksum's input ends: `<prefix>_<random>`.
const CHECKED_LEN: usize = PREFIX_LEN + 1 + RANDOM_LEN;

/// The length of every token, in bytes (all ASCII): 3 + 1 + 30 + 1 + 6.
pub const TOKEN_LEN: usize = CHECKED_LEN + 1 + CHECKSUM_LEN;

/// What a token is for, told by its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// `mat_`: an OAuth 2.0 access token.
    AccessToken,
    /// `mar_`: an OAuth 2.0 refresh token.
    RefreshToken,
    /// `mct_`: an access token of the Matrix compatibility layer (legacy `/login`).
    CompatAccessToken,
    /// `mcr_`: a refresh token of the Matrix compatibility layer.
    CompatRefreshToken,
    /// `mpt_`: a personal access token.
    PersonalAccessToken,
}

/// Why a string is not a token of ours. The messages never repeat the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenFormatError {
    #[error("the token does not start with a known prefix (mat_, mar_, mct_, mcr_ or mpt_)")]
    UnknownPrefix,
    #[error("the token has the wrong length: expected {TOKEN_LEN} bytes, got {0}")]
    BadLength(usize),
    #[error(
        "the token is malformed: expected `<prefix>_<30 base62 characters>_<6 base62 characters>`"
    )]
    Malformed,
    #[error("the token's checksum does not match (a mistyped or truncated token?)")]
    BadChecksum,
}

impl TokenKind {
    /// Every kind, in declaration order.
    pub const ALL: [TokenKind; 5] = [
        TokenKind::AccessToken,
        TokenKind::RefreshToken,
        TokenKind::CompatAccessToken,
        TokenKind::CompatRefreshToken,
        TokenKind::PersonalAccessToken,
    ];

    /// The three letters a token of this kind starts with (before the `_`).
    pub const fn prefix(self) -> &'static str {
        match self {
            TokenKind::AccessToken => "mat",
            TokenKind::RefreshToken => "mar",
            TokenKind::CompatAccessToken => "mct",
            TokenKind::CompatRefreshToken => "mcr",
            TokenKind::PersonalAccessToken => "mpt",
        }
    }

    fn from_prefix(prefix: &[u8]) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.prefix().as_bytes() == prefix)
    }

    /// A new token of this kind: `<prefix>_<30 random base62>_<6 base62 CRC-32>`.
    pub fn generate(self, rng: &mut impl RngCore) -> String {
        let mut token = String::with_capacity(TOKEN_LEN);
        token.push_str(self.prefix());
        token.push('_');
        push_random(rng, BASE62, RANDOM_LEN, &mut token);
        let checksum = checksum(token.as_bytes());
        token.push('_');
        // base62 digits are ASCII
        token.extend(checksum.iter().map(|&b| char::from(b)));
        token
    }

    /// Which kind of token `token` is, if it is well formed: known prefix, length, separators,
    /// base62 characters and checksum. This says nothing about whether the token was ever issued
    /// or is still valid: that is the database's answer, asked only after this one. Never panics.
    pub fn parse(token: &str) -> Result<TokenKind, TokenFormatError> {
        let bytes = token.as_bytes();
        // A prefix is recognised with its separator: `mat_…`.
        let kind = match bytes.get(..PREFIX_LEN + 1) {
            Some([a, b, c, b'_']) => Self::from_prefix(&[*a, *b, *c]),
            _ => None,
        }
        .ok_or(TokenFormatError::UnknownPrefix)?;
        if bytes.len() != TOKEN_LEN {
            return Err(TokenFormatError::BadLength(bytes.len()));
        }
        let (checked, rest) = bytes.split_at(CHECKED_LEN);
        let random = &checked[PREFIX_LEN + 1..];
        let (separator, given_checksum) = rest.split_at(1);
        if separator != b"_"
            || !random.iter().all(u8::is_ascii_alphanumeric)
            || !given_checksum.iter().all(u8::is_ascii_alphanumeric)
        {
            return Err(TokenFormatError::Malformed);
        }
        if given_checksum != checksum(checked) {
            return Err(TokenFormatError::BadChecksum);
        }
        Ok(kind)
    }
}

/// The format of a token Synapse issued before it delegated its authentication, imported by
/// `provider syn2mas` as a compat token: stored as its SHA-256 like every other token, it keeps
/// working until its session ends. Such a token carries no checksum of ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SynapseTokenFormat {
    /// `syt_<unpadded base64 localpart>_<20 letters>_<6 base62 CRC-32>`: an access token
    /// (`generate_access_token` in Synapse's `synapse/handlers/auth.py`).
    Access,
    /// `syr_…`, the same shape: a refresh token (`generate_refresh_token`, ibid.).
    Refresh,
    /// A macaroon (base64 of `0010location …`): the access tokens of Synapse before 1.34.
    Macaroon,
}

/// Bounds on an imported macaroon's length: a serialized macaroon with its caveats is some
/// hundreds of bytes; anything far outside that is not one and costs no query.
const MACAROON_LEN: std::ops::RangeInclusive<usize> = 40..=4096;

impl SynapseTokenFormat {
    /// Is `token` shaped like a Synapse token (for `syt_`/`syr_`, with Synapse's checksum, which
    /// is ours: the CRC-32 of everything before the last `_` in base 62, 6 digits)? Says nothing
    /// about whether it was imported: that is the database's answer. Never panics.
    pub fn of(token: &str) -> Option<Self> {
        if let Some(format) = match token.get(..4) {
            Some("syt_") => Some(Self::Access),
            Some("syr_") => Some(Self::Refresh),
            _ => None,
        } {
            let (checked, given) = token.rsplit_once('_')?;
            let mut parts = checked.get(4..)?.split('_');
            let (Some(localpart), Some(random), None) = (parts.next(), parts.next(), parts.next())
            else {
                return None;
            };
            let base64 = |c: u8| c.is_ascii_alphanumeric() || c == b'+' || c == b'/';
            let well_formed = !localpart.is_empty()
                && localpart.bytes().all(base64)
                && !random.is_empty()
                && random.bytes().all(|c| c.is_ascii_alphanumeric())
                && given.len() == CHECKSUM_LEN
                && given.as_bytes() == checksum(checked.as_bytes());
            return well_formed.then_some(format);
        }
        // pymacaroons serializes with URL-safe base64, with or without padding.
        let macaroon = token.starts_with("MDA")
            && MACAROON_LEN.contains(&token.len())
            && token.bytes().all(|c| {
                c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'=' | b'+' | b'/')
            });
        macaroon.then_some(Self::Macaroon)
    }

    /// Can a token of this format be presented as an access token (`Authorization: Bearer`)?
    pub fn is_access(self) -> bool {
        matches!(self, Self::Access | Self::Macaroon)
    }
}

/// The checksum of `<prefix>_<random>`, as the module documentation describes it.
fn checksum(checked: &[u8]) -> [u8; CHECKSUM_LEN] {
    encode_base62_u32(crc32fast::hash(checked))
}

/// `n` in base 62, most significant digit first, left-padded with `0` to 6 digits.
fn encode_base62_u32(mut n: u32) -> [u8; CHECKSUM_LEN] {
    let mut digits = [BASE62[0]; CHECKSUM_LEN];
    for digit in digits.iter_mut().rev() {
        // n % 62 < 62: always in bounds
        *digit = BASE62[(n % 62) as usize];
        n /= 62;
    }
    digits
}

/// One character drawn uniformly from `alphabet` (at most 256 characters, at least 1), by
/// rejection sampling: take the top `bits` bits of a random `u32`, where `2^bits` is the smallest
/// power of two not below the alphabet's size, and draw again when they fall outside it. No modulo
/// bias; at least half of the draws are accepted.
fn random_char(rng: &mut impl RngCore, alphabet: &[u8]) -> char {
    debug_assert!((1..=256).contains(&alphabet.len()));
    let bits = alphabet.len().next_power_of_two().trailing_zeros();
    loop {
        let candidate = if bits == 0 {
            0
        } else {
            (rng.next_u32() >> (32 - bits)) as usize
        };
        if let Some(&c) = alphabet.get(candidate) {
            return char::from(c);
        }
    }
}

fn push_random(rng: &mut impl RngCore, alphabet: &[u8], len: usize, out: &mut String) {
    out.extend((0..len).map(|_| random_char(rng, alphabet)));
}

/// `len` characters drawn uniformly from [`BASE62`]: log2(62) ≈ 5.95 bits each, so 22 characters
/// give 128 bits and 32 give 190. For authorization codes, device codes and other single-use
/// secrets that are not [`TokenKind`] tokens.
pub fn random_code(rng: &mut impl RngCore, len: usize) -> String {
    let mut code = String::with_capacity(len);
    push_random(rng, BASE62, len, &mut code);
    code
}

/// A new RFC 8628 user code, as shown to the user: [`USER_CODE_LEN`] characters from
/// [`USER_CODE_ALPHABET`] in two groups of four, `XXXX-XXXX` (§6.1). Store and compare it through
/// [`normalize_user_code`].
pub fn user_code(rng: &mut impl RngCore) -> String {
    let half = USER_CODE_LEN / 2;
    let mut code = String::with_capacity(USER_CODE_LEN + 1);
    push_random(rng, USER_CODE_ALPHABET, half, &mut code);
    code.push('-');
    push_random(rng, USER_CODE_ALPHABET, USER_CODE_LEN - half, &mut code);
    code
}

/// A user code as stored and compared: ASCII letters and digits only, upper case. RFC 8628 §6.1:
/// users type it case-insensitively and may add or omit the dashes and spaces it is shown with.
/// Everything else is dropped too (other punctuation, non-breaking spaces or typographic dashes
/// pasted from a page): a code of ours never contains them, so this only forgives decoration.
pub fn normalize_user_code(user_code: &str) -> String {
    user_code
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use rand::{rngs::StdRng, SeedableRng};

    use super::*;

    /// Made by hand (prefix, random part) with the checksum computed independently (Python's
    /// `zlib.crc32` and a big-endian base62 encoder).
    const HANDMADE: [(&str, TokenKind); 3] = [
        (
            "mat_000000000000000000000000000000_3ExMZI",
            TokenKind::AccessToken,
        ),
        (
            "mar_abcdefghijklmnopqrstuvwxyzABCD_26uB93",
            TokenKind::RefreshToken,
        ),
        (
            "mpt_0123456789ABCDEFGHIJKLMNOPQRST_3yFkHY",
            TokenKind::PersonalAccessToken,
        ),
    ];

    fn is_base62(s: &str) -> bool {
        s.bytes().all(|b| BASE62.contains(&b))
    }

    #[test]
    fn checksum_encoding_vectors() {
        // The CRC-32 check value, and the ends of the range.
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
        assert_eq!(&encode_base62_u32(0xCBF4_3926), b"3jZRME");
        assert_eq!(&encode_base62_u32(0), b"000000");
        assert_eq!(&encode_base62_u32(61), b"00000z");
        assert_eq!(&encode_base62_u32(62), b"000010");
        assert_eq!(&encode_base62_u32(u32::MAX), b"4gfFC3");
    }

    #[test]
    fn handmade_tokens_parse() {
        for (token, kind) in HANDMADE {
            assert_eq!(TokenKind::parse(token), Ok(kind), "{token}");
        }
    }

    #[test]
    fn prefixes() {
        let prefixes: Vec<_> = TokenKind::ALL.iter().map(|k| k.prefix()).collect();
        assert_eq!(prefixes, ["mat", "mar", "mct", "mcr", "mpt"]);
        for kind in TokenKind::ALL {
            assert_eq!(TokenKind::from_prefix(kind.prefix().as_bytes()), Some(kind));
        }
    }

    #[test]
    fn a_fixed_seed_gives_fixed_values() {
        // StdRng is only reproducible within one rand version: update these when upgrading rand.
        let mut rng = StdRng::seed_from_u64(42);
        assert_eq!(
            TokenKind::AccessToken.generate(&mut rng),
            "mat_8XFYteP2dQMlBse8U0qxcWtPj9pXqD_4Jxk6g"
        );
        assert_eq!(random_code(&mut rng, 10), "e0AXT3gfGs");
        assert_eq!(user_code(&mut rng), "STVR-CDPM");
    }

    #[test]
    fn synapse_tokens() {
        use SynapseTokenFormat::*;
        // Shaped as Synapse makes them for `alice` (`generate_access_token`).
        let made = |prefix: &str, random: &str| {
            let base = format!("{prefix}_YWxpY2U_{random}");
            let crc = checksum(base.as_bytes());
            format!("{base}_{}", std::str::from_utf8(&crc).unwrap())
        };
        let access = made("syt", "KiWMbqkSHAjxdXpQcPfT");
        assert_eq!(SynapseTokenFormat::of(&access), Some(Access));
        assert_eq!(
            SynapseTokenFormat::of(&made("syr", "KiWMbqkSHAjxdXpQcPfT")),
            Some(Refresh)
        );
        // A changed character breaks the checksum; a wrong shape is nothing.
        assert_eq!(
            SynapseTokenFormat::of(&access.replacen("Ki", "Kj", 1)),
            None
        );
        assert_eq!(SynapseTokenFormat::of("syt_YWxpY2U_abc"), None);
        assert_eq!(SynapseTokenFormat::of("syt_"), None);
        assert_eq!(SynapseTokenFormat::of("syt_é_é_é"), None);
        let macaroon =
            "MDAxN2xvY2F0aW9uIGxvY2FsaG9zdAowMDEzaWRlbnRpZmllciBrZXkKMDAxMGNpZCBnZW4gPSAxCg";
        assert_eq!(SynapseTokenFormat::of(macaroon), Some(Macaroon));
        assert_eq!(SynapseTokenFormat::of("MDA short"), None);
        // Our own tokens are not Synapse's.
        let ours = TokenKind::CompatAccessToken.generate(&mut StdRng::seed_from_u64(1));
        assert_eq!(SynapseTokenFormat::of(&ours), None);
        assert!(Access.is_access() && Macaroon.is_access() && !Refresh.is_access());
    }

    #[test]
    fn errors() {
        use TokenFormatError::*;
        let good = HANDMADE[0].0;
        assert_eq!(TokenKind::parse(""), Err(UnknownPrefix));
        assert_eq!(TokenKind::parse("mat"), Err(UnknownPrefix));
        assert_eq!(
            TokenKind::parse("syt_dGVzdA_abcdefghij_0a1b2c"),
            Err(UnknownPrefix)
        );
        assert_eq!(
            TokenKind::parse(&good.replacen("mat", "MAT", 1)),
            Err(UnknownPrefix)
        );
        assert_eq!(TokenKind::parse("mat_"), Err(BadLength(4)));
        assert_eq!(TokenKind::parse(&good[..40]), Err(BadLength(40)));
        assert_eq!(TokenKind::parse(&format!("{good}0")), Err(BadLength(42)));
        assert_eq!(TokenKind::parse(&format!("{good} ")), Err(BadLength(42)));
        assert_eq!(
            TokenKind::parse(&good.replacen('0', "-", 1)),
            Err(Malformed)
        );
        assert_eq!(
            TokenKind::parse(&good.replacen("_3", "-3", 1)),
            Err(Malformed)
        );
        // A two-byte character in place of two ASCII ones keeps the length.
        assert_eq!(
            TokenKind::parse(&good.replacen("00", "é", 1)),
            Err(Malformed)
        );
        assert_eq!(
            TokenKind::parse(&good.replacen("3ExMZI", "3ExMZJ", 1)),
            Err(BadChecksum)
        );
        assert_eq!(
            TokenKind::parse(&good.replacen("000", "001", 1)),
            Err(BadChecksum)
        );
        // A valid checksum of a different token (the kind is part of what is checked).
        assert_eq!(
            TokenKind::parse(&good.replacen("mat", "mar", 1)),
            Err(BadChecksum)
        );
    }

    #[test]
    fn errors_do_not_echo_the_token() {
        let token = "mat_SECRETSECRETSECRETSECRETSECRET_000000";
        let err = TokenKind::parse(token).unwrap_err();
        assert_eq!(err, TokenFormatError::BadChecksum);
        assert!(!err.to_string().contains("SECRET"));
    }

    #[test]
    fn every_single_substitution_of_a_token_is_refused() {
        // CRC-32 detects every error burst of at most 32 bits, so every single-byte substitution
        // in `<prefix>_<random>`; the checksum's encoding is canonical, so changing one of its
        // characters can't match either; separators must be `_`. Exhaustively over ASCII.
        for (token, _) in HANDMADE {
            for i in 0..token.len() {
                for replacement in 0u8..128 {
                    let mut bytes = token.as_bytes().to_vec();
                    if bytes[i] == replacement {
                        continue;
                    }
                    bytes[i] = replacement;
                    let changed = String::from_utf8(bytes).unwrap();
                    assert!(TokenKind::parse(&changed).is_err(), "{changed:?}");
                }
            }
        }
    }

    #[test]
    fn user_codes() {
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..200 {
            let code = user_code(&mut rng);
            assert_eq!(code.len(), USER_CODE_LEN + 1);
            assert_eq!(code.as_bytes()[4], b'-');
            let normalized = normalize_user_code(&code);
            assert_eq!(normalized.len(), USER_CODE_LEN);
            assert!(normalized.bytes().all(|b| USER_CODE_ALPHABET.contains(&b)));
            assert_eq!(normalize_user_code(&code.to_lowercase()), normalized);
        }
        assert_eq!(normalize_user_code(" bcdf-ghjk "), "BCDFGHJK");
        assert_eq!(normalize_user_code("BcDf GhJk"), "BCDFGHJK");
        assert_eq!(normalize_user_code("BCDF\u{2013}GHJK\u{a0}"), "BCDFGHJK");
        assert_eq!(normalize_user_code(""), "");
    }

    #[test]
    fn user_code_alphabet_has_no_vowels_or_look_alikes() {
        // Exactly RFC 8628 §6.1's suggestion, distinct characters.
        assert_eq!(USER_CODE_ALPHABET, b"BCDFGHJKLMNPQRSTVWXZ");
        for c in USER_CODE_ALPHABET {
            assert!(c.is_ascii_uppercase() && !b"AEIOU".contains(c));
        }
        let mut sorted = USER_CODE_ALPHABET.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), USER_CODE_ALPHABET.len());
    }

    #[test]
    fn draws_are_uniform_enough() {
        // Each of the 62 characters among 62 000 draws: expected 1000 times, standard deviation
        // about 31; a modulo bias from `byte % 62` would give the first 8 characters ~1.2x.
        let mut rng = StdRng::seed_from_u64(3);
        let mut counts = [0u32; 62];
        for b in random_code(&mut rng, 62_000).bytes() {
            let i = BASE62.iter().position(|&c| c == b).unwrap();
            counts[i] += 1;
        }
        assert!(
            counts.iter().all(|&n| (850..1150).contains(&n)),
            "{counts:?}"
        );
    }

    fn any_kind() -> impl Strategy<Value = TokenKind> {
        proptest::sample::select(TokenKind::ALL.to_vec())
    }

    proptest! {
        #[test]
        fn generated_tokens_parse_to_their_kind(kind in any_kind(), seed in any::<u64>()) {
            let token = kind.generate(&mut StdRng::seed_from_u64(seed));
            prop_assert_eq!(token.len(), TOKEN_LEN);
            let prefix = format!("{}_", kind.prefix());
            prop_assert!(token.starts_with(&prefix));
            prop_assert!(is_base62(&token[4..34]) && is_base62(&token[35..]));
            prop_assert_eq!(TokenKind::parse(&token), Ok(kind));
        }

        #[test]
        fn a_single_substitution_is_refused(
            kind in any_kind(),
            seed in any::<u64>(),
            index in 0..TOKEN_LEN,
            replacement in any::<char>(),
        ) {
            let token = kind.generate(&mut StdRng::seed_from_u64(seed));
            let original = char::from(token.as_bytes()[index]);
            prop_assume!(replacement != original);
            let mut changed = token[..index].to_owned();
            changed.push(replacement);
            changed.push_str(&token[index + 1..]);
            prop_assert!(TokenKind::parse(&changed).is_err());
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,60}") {
            let _ = TokenKind::parse(&s);
        }

        #[test]
        fn synapse_format_never_panics(prefix in "(syt_|syr_|MDA)?", tail in "[A-Za-z0-9_+/=é\u{0}]{0,80}") {
            let _ = SynapseTokenFormat::of(&format!("{prefix}{tail}"));
        }

        #[test]
        fn parse_never_panics_near_tokens(kind in any_kind(), tail in "[A-Za-z0-9_é€\u{0}]{0,45}") {
            let _ = TokenKind::parse(&format!("{}_{tail}", kind.prefix()));
        }

        #[test]
        fn random_codes_are_base62_of_the_length(seed in any::<u64>(), len in 0usize..200) {
            let code = random_code(&mut StdRng::seed_from_u64(seed), len);
            prop_assert_eq!(code.len(), len);
            prop_assert!(is_base62(&code));
        }

        #[test]
        fn normalization_is_idempotent_and_case_insensitive(s in "\\PC{0,30}") {
            let once = normalize_user_code(&s);
            prop_assert_eq!(&normalize_user_code(&once), &once);
            prop_assert_eq!(&normalize_user_code(&s.to_ascii_lowercase()), &once);
            prop_assert!(once.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()));
        }
    }
}
