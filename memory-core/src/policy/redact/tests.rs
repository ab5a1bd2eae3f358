//! Unit tests of the redactor.

#![allow(clippy::unwrap_used)]

use super::*;
use serde_json::json;

/// Compiled once: building the rules in an unoptimised test build is slow.
static DEFAULT: std::sync::LazyLock<Redactor> =
    std::sync::LazyLock::new(|| Redactor::new(&RedactionConfig::default()).unwrap());

fn redactor() -> Redactor {
    DEFAULT.clone()
}

/// Deterministic pseudo-random alphanumeric text. Test secrets are assembled at run time so
/// this file holds no string a secret scanner would flag.
fn body(len: usize) -> String {
    const ALPHABET: &[u8] = b"aB3dE5gH7jK9mN2pQ4sT6vW8yZ0cF1";
    (0..len)
        .map(|i| char::from(ALPHABET[(i * 7 + 3) % ALPHABET.len()]))
        .collect()
}

fn assert_redacted(input: &str, expected: &str) {
    let r = redactor();
    assert_eq!(r.redact(input), expected, "input: {input}");
    let once = r.redact(input).into_owned();
    assert_eq!(r.redact(&once), once, "not idempotent: {input}");
}

fn assert_untouched(input: &str) {
    let out = redactor().redact(input);
    assert!(
        matches!(out, Cow::Borrowed(_)),
        "changed: {input:?} -> {out:?}"
    );
}

#[test]
fn aws_access_key() {
    for prefix in ["AKIA", "ASIA"] {
        let key = format!("{prefix}{}", body(16).to_ascii_uppercase());
        assert_redacted(
            &format!("export AWS_ACCESS_KEY_ID={key}"),
            "export AWS_ACCESS_KEY_ID=[REDACTED:aws_access_key]",
        );
    }
}

#[test]
fn aws_secret() {
    let secret = format!("{}/{}", body(20), body(19));
    assert_redacted(
        &format!("aws_secret_access_key = {secret}\nregion = eu"),
        "aws_secret_access_key = [REDACTED:aws_secret]\nregion = eu",
    );
    assert_redacted(
        &format!(r#"{{"AWS_SECRET_ACCESS_KEY": "{secret}"}}"#),
        r#"{"AWS_SECRET_ACCESS_KEY": "[REDACTED:aws_secret]"}"#,
    );
}

#[test]
fn gcp_api_key() {
    let key = format!("AIza{}", body(35));
    assert_redacted(
        &format!("curl https://maps.example/api?key={key}&q=x"),
        "curl https://maps.example/api?key=[REDACTED:gcp_api_key]&q=x",
    );
}

#[test]
fn github_token() {
    for prefix in ["ghp_", "gho_", "ghu_", "ghs_", "ghr_"] {
        let token = format!("{prefix}{}", body(36));
        assert_redacted(
            &format!("git clone with {token} done"),
            "git clone with [REDACTED:github_token] done",
        );
    }
    let fine = format!("github_pat_{}_{}", body(22), body(59));
    assert_redacted(&format!("GH={fine}"), "GH=[REDACTED:github_token]");
    // Inside an Authorization header the specific kind wins.
    assert_redacted(
        &format!("Authorization: token ghp_{}", body(36)),
        "Authorization: token [REDACTED:github_token]",
    );
}

#[test]
fn gitlab_token() {
    let token = format!("glpat-{}", body(20));
    assert_redacted(
        &format!("PRIVATE-TOKEN: {token}"),
        "PRIVATE-TOKEN: [REDACTED:gitlab_token]",
    );
}

#[test]
fn slack_token() {
    let bot = format!("xoxb-{}-{}", "1234567890", body(24));
    assert_redacted(
        &format!("slack {bot} ok"),
        "slack [REDACTED:slack_token] ok",
    );
    let app = format!("xapp-1-{}", body(30));
    assert_redacted(&app, "[REDACTED:slack_token]");
    let hook = format!(
        "https://hooks.slack.com/services/T{}/B{}/{}",
        body(8),
        body(8),
        body(24)
    );
    assert_redacted(
        &format!("post to {hook} now"),
        "post to https://hooks.slack.com/services/[REDACTED:slack_token] now",
    );
    assert_untouched("use an xoxb-your-token-here value");
}

#[test]
fn openai_key() {
    let legacy = format!("sk-{}", body(48));
    assert_redacted(
        &format!("OPENAI_KEY {legacy}"),
        "OPENAI_KEY [REDACTED:openai_key]",
    );
    let project = format!("sk-proj-{}_{}", body(40), body(20));
    assert_redacted(&format!("key: '{project}'"), "key: '[REDACTED:openai_key]'");
    assert_untouched("see sk-learn-style-preprocessing-pipeline docs");
}

#[test]
fn stripe_key() {
    for prefix in ["sk_live_", "rk_live_", "sk_test_"] {
        let key = format!("{prefix}{}", body(24));
        assert_redacted(
            &format!("stripe.api_key = {key}"),
            "stripe.api_key = [REDACTED:stripe_key]",
        );
    }
}

#[test]
fn jwt() {
    let jwt = format!("eyJ{}.eyJ{}.{}", body(17), body(40), body(43));
    assert_redacted(
        &format!("cookie session={jwt}; path=/"),
        "cookie session=[REDACTED:jwt]; path=/",
    );
    assert_redacted(
        &format!("Authorization: Bearer {jwt}"),
        "Authorization: Bearer [REDACTED:jwt]",
    );
}

#[test]
fn private_key() {
    for label in ["RSA ", "EC ", "OPENSSH ", "", "ENCRYPTED "] {
        let pem = format!(
            "-----BEGIN {label}PRIVATE KEY-----\n{}\n{}\n-----END {label}PRIVATE KEY-----",
            body(64),
            body(20)
        );
        assert_redacted(
            &format!("key:\n{pem}\nafter"),
            "key:\n[REDACTED:private_key]\nafter",
        );
    }
    // JSON-escaped and truncated.
    let escaped = format!("\"-----BEGIN PRIVATE KEY-----\\n{}\\n", body(64));
    assert_redacted(&escaped, "\"[REDACTED:private_key]");
    // A header constant in a PEM parser is not a key.
    assert_untouched(r#"if line.starts_with("-----BEGIN RSA PRIVATE KEY-----") {"#);
    assert_untouched(r#"const HEADER: &str = "-----BEGIN PRIVATE KEY-----\n";"#);
}

#[test]
fn url_password_keeps_scheme_user_and_host() {
    assert_redacted(
        "postgres://admin:s3cr3t!@db:5432/app",
        "postgres://admin:[REDACTED:url_password]@db:5432/app",
    );
    assert_redacted(
        "redis://:p@ss@cache:6379",
        "redis://:[REDACTED:url_password]@cache:6379",
    );
    assert_redacted(
        "DATABASE_URL=\"mysql://root:hunter2@localhost/db\"",
        "DATABASE_URL=\"mysql://root:[REDACTED:url_password]@localhost/db\"",
    );
    assert_untouched("postgres://user:${DB_PASSWORD}@db/app");
    assert_untouched("postgres://user:password@localhost/app");
    assert_untouched("https://example.com:8443/path?q=1");
}

#[test]
fn assignment_keeps_key_and_separator() {
    let cases = [
        ("password=hunter2", "password=[REDACTED:assignment]"),
        ("passwd: hunter2", "passwd: [REDACTED:assignment]"),
        (
            r#"api_key = "abc123""#,
            r#"api_key = "[REDACTED:assignment]""#,
        ),
        ("APIKEY=abcdef", "APIKEY=[REDACTED:assignment]"),
        ("secret=letmein", "secret=[REDACTED:assignment]"),
        (
            "client_secret: 'x9y8z7'",
            "client_secret: '[REDACTED:assignment]'",
        ),
        (
            "access_token=ya29a0AfH6SMC",
            "access_token=[REDACTED:assignment]",
        ),
        (
            "auth_token = tok_12345678",
            "auth_token = [REDACTED:assignment]",
        ),
        (
            "?token=abc123def456&user=bob",
            "?token=[REDACTED:assignment]&user=bob",
        ),
        (
            "DB_PASSWORD=hunter2 cargo run",
            "DB_PASSWORD=[REDACTED:assignment] cargo run",
        ),
        (
            "Server=db;User Id=sa;Password=letmein;",
            "Server=db;User Id=sa;Password=[REDACTED:assignment];",
        ),
        (
            r#"{"password": "correct horse battery"}"#,
            r#"{"password": "[REDACTED:assignment]"}"#,
        ),
        (
            r#"{\"password\":\"hunter2\"}"#,
            r#"{\"password\":\"[REDACTED:assignment]\"}"#,
        ),
        (
            r#"let password: &str = "hunter2";"#,
            r#"let password: &str = "[REDACTED:assignment]";"#,
        ),
        (
            "mysql --password=hunter2 -u root",
            "mysql --password=[REDACTED:assignment] -u root",
        ),
        ("(password=hunter2)", "(password=[REDACTED:assignment])"),
        (
            "docker login -u bob --password hunter2 registry",
            "docker login -u bob --password [REDACTED:assignment] registry",
        ),
        (
            "app --api-key 'k-123' --verbose",
            "app --api-key '[REDACTED:assignment]' --verbose",
        ),
        (
            "password: hunter2 # prod",
            "password: [REDACTED:assignment] # prod",
        ),
        (
            r#"args.push("--password=hunter2");"#,
            r#"args.push("--password=[REDACTED:assignment]");"#,
        ),
        (
            "Authorization: Bearer abc.def-ghi",
            "Authorization: Bearer [REDACTED:assignment]",
        ),
        (
            "authorization: bearer session.key",
            "authorization: bearer [REDACTED:assignment]",
        ),
        (
            "curl -H 'Authorization: Basic dXNlcjpwYXNz'",
            "curl -H 'Authorization: Basic [REDACTED:assignment]'",
        ),
        (
            r#""Authorization": "Bearer abc123""#,
            r#""Authorization": "Bearer [REDACTED:assignment]""#,
        ),
        (
            "requests.get(url, headers=h) # Bearer abcdefghij0123456789xyz",
            "requests.get(url, headers=h) # Bearer [REDACTED:assignment]",
        ),
    ];
    for (input, expected) in cases {
        assert_redacted(input, expected);
    }
}

#[test]
fn values_that_once_escaped() {
    let cases = [
        ("password=!Qaz2wsx#Edc", "password=[REDACTED:assignment]"),
        (
            "DB_PASSWORD=@dm1n2024 ./run",
            "DB_PASSWORD=[REDACTED:assignment] ./run",
        ),
        ("password=Tr0ub4dor&3", "password=[REDACTED:assignment]"),
        ("password=Tr0ub(4dor", "password=[REDACTED:assignment]"),
        (
            "GET /login?user=bob&password=pa55w0rd&next=/home",
            "GET /login?user=bob&password=[REDACTED:assignment]&next=/home",
        ),
        (
            "redis://default:pa/ss#w0rd@cache:6379/0",
            "redis://default:[REDACTED:url_password]@cache:6379/0",
        ),
        (
            "curl -u admin:s3cr3tPass https://api.local",
            "curl -u admin:[REDACTED:cli_credential] https://api.local",
        ),
        (
            "mysql -u root -pHunter22 shop",
            "mysql -u root -p[REDACTED:cli_credential] shop",
        ),
        (
            "sshpass -p Hunter22 ssh deploy@db",
            "sshpass -p [REDACTED:cli_credential] ssh deploy@db",
        ),
        (
            "{\"pass\": \"letmein99\"}",
            "{\"pass\": \"[REDACTED:assignment]\"}",
        ),
        ("db_pwd=letmein99", "db_pwd=[REDACTED:assignment]"),
        (
            "SECRET_KEY_BASE=9f8e7d6c5b4a3928",
            "SECRET_KEY_BASE=[REDACTED:assignment]",
        ),
        (
            "MYSQL_PWD=my5qlR00tPw mysql -u root",
            "MYSQL_PWD=[REDACTED:assignment] mysql -u root",
        ),
        (
            "redis-cli -h cache -a R3disPassW0rd ping",
            "redis-cli -h cache -a [REDACTED:cli_credential] ping",
        ),
        (
            "openssl enc -aes-256-cbc -k Tr0ub4dor -in a",
            "openssl enc -aes-256-cbc -k [REDACTED:cli_credential] -in a",
        ),
        (
            "openssl pkcs12 -in c.p12 -passin pass:Hunter22",
            "openssl pkcs12 -in c.p12 -passin pass:[REDACTED:cli_credential]",
        ),
        (
            "az login -u ops@example.com -p Azur3Pw",
            "az login -u ops@example.com -p [REDACTED:cli_credential]",
        ),
        (
            "htpasswd -bc /etc/users admin S3cretAdm1n",
            "htpasswd -bc /etc/users admin [REDACTED:cli_credential]",
        ),
        (
            "the password is Hunter2Hunter2 for now",
            "the password is [REDACTED:assignment] for now",
        ),
        (
            "use passphrase \"correct horse battery\" to unlock",
            "use passphrase \"[REDACTED:assignment]\" to unlock",
        ),
    ];
    for (input, expected) in cases {
        assert_redacted(input, expected);
    }
    let aws = format!("{}/{}", body(20), body(19));
    assert_redacted(
        &format!(r#""SecretAccessKey": "{aws}","#),
        r#""SecretAccessKey": "[REDACTED:assignment]","#,
    );
    let azure = format!("{}{}==", body(40), body(46));
    assert_redacted(
        &format!("AccountName=store1;AccountKey={azure};EndpointSuffix=core.windows.net"),
        "AccountName=store1;AccountKey=[REDACTED:assignment];EndpointSuffix=core.windows.net",
    );
    let pem = format!(
        "-----BEGIN RSA PRIVATE KEY----- {} {} -----END RSA PRIVATE KEY-----",
        body(64),
        body(40)
    );
    assert_redacted(
        &format!("key: {pem} done"),
        "key: [REDACTED:private_key] done",
    );
    for (token, kind) in [
        (format!("SG.{}.{}", body(22), body(43)), "sendgrid_key"),
        (format!("hf_{}", body(34)), "huggingface_token"),
        (format!("npm_{}", body(36)), "npm_token"),
        (format!("dckr_pat_{}", body(27)), "docker_token"),
    ] {
        assert_redacted(
            &format!("using {token} now"),
            &format!("using [REDACTED:{kind}] now"),
        );
    }
    assert_redacted(
        &format!("the deploy key is {}", body(32)),
        "the deploy key is [REDACTED:high_entropy]",
    );
    // Cut short where a field's limit cuts it (a parameter key holds 40 bytes): the vendor's
    // prefix and what is left of the key are still a secret.
    let cut = format!("SG.{}.{}", body(22), body(14));
    assert_eq!(cut.len(), 40);
    assert_redacted(&cut, "[REDACTED:sendgrid_key]");
    assert_redacted(
        &format!("tag ghp_{}", &body(36)[..12]),
        "tag [REDACTED:github_token]",
    );
    // The same prefix followed by words, or in the middle of the text, is not a key.
    for kept in [
        "see hf_hub_download",
        "ghp_token_format in the docs",
        "SG.prefix",
    ] {
        assert_redacted(kept, kept);
    }
}

#[test]
fn lookalikes_that_stay() {
    for line in [
        "bypass=true",
        "PWD=/home/dev/project",
        "OLDPWD=/tmp",
        "compass: north",
        "https://example.com:8443/users/@bob",
        "http://localhost:8080/#/login@home",
        "mysql -u app -p -h db shop",
        "password_hint: first pet",
        "GOOGLE_APPLICATION_CREDENTIALS=/etc/app/sa.json",
        "cache key 3f786850e387550fdab836ed7e6dc881de23001b miss",
        "token id 67e55044-10b1-426f-9247-bb680e5fe0c8 done",
        "key models/all-MiniLM-L6-v2/tokenizer.json",
        "if !password_ok { return }",
        "password = !valid",
        "the password is required",
        "Password was reset by the admin.",
        "password reset link sent",
        "the password must be 12 characters",
        "openssl x509 -in cert.pem -noout -text",
        "htpasswd -c /etc/users admin",
        "az login --use-device-code",
    ] {
        assert_untouched(line);
    }
}

#[test]
fn json_numbers_short_keys_and_secret_keys() {
    let r = redactor();
    let gh = format!("ghp_{}", body(36));
    let mut value = json!({
        "password": 123_456_789,
        "pass": "letmein99",
        "pwd": "letmein99",
        "max_tokens": 4096,
        "auth": format!("{}==", body(30)),
        "bypass": "yes",
    });
    value.as_object_mut().unwrap().insert(gh.clone(), json!(1));
    r.redact_json(&mut value);
    assert_eq!(
        value,
        json!({
            "password": "[REDACTED:assignment]",
            "pass": "[REDACTED:assignment]",
            "pwd": "[REDACTED:assignment]",
            "max_tokens": 4096,
            "auth": "[REDACTED:assignment]",
            "bypass": "yes",
            "[REDACTED:github_token]": 1,
        })
    );
    let once = value.clone();
    r.redact_json(&mut value);
    assert_eq!(value, once);
    // Two secret keys that redact to the same marker both survive.
    let mut value = json!({});
    let map = value.as_object_mut().unwrap();
    map.insert(gh.clone(), json!(1));
    map.insert(format!("ghp_{}", body(40)), json!(2));
    r.redact_json(&mut value);
    let keys: Vec<&String> = value.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 2, "{value}");
    assert!(
        keys.iter()
            .all(|k| k.starts_with("[REDACTED:github_token]"))
    );
}

#[test]
fn ordinary_code_is_untouched() {
    let sha = "3f786850e387550fdab836ed7e6dc881de23001b";
    let lines = [
        "let token = lexer.next_token();",
        "fn password_hash(input: &str) -> String",
        "if api_key.is_empty() { return Err(Error::invalid(\"api_key\", \"empty\")) }",
        "password: ${DB_PASSWORD}",
        "export PASSWORD=$SECRET",
        "https://docs.rs/regex/latest/regex/",
        "git@github.com:org/repo.git",
        "cargo test -- --nocapture",
        "id 67e55044-10b1-426f-9247-bb680e5fe0c8 done",
        sha,
        "checksum = \"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\"",
        "\"integrity\": \"sha512-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU9xK2bGx+zvQ==\"",
        "Send the Bearer token in the Authorization header.",
        "token: &str,",
        "let token = String::new();",
        "pub token: Token,",
        "fn login(user: &str, password: String) -> Result<Session>",
        "password: String,",
        "struct Creds { secret: Secret<String> }",
        "is_secret: bool,",
        "self.api_key = api_key",
        "password = get_password()",
        "api_key = os.environ[\"API_KEY\"]",
        "api_key = os.environ.get(\"API_KEY\")",
        "const token = process.env.API_TOKEN;",
        "let key = env::var(\"API_KEY\")?;",
        "token = tok;",
        "let mut secret = key;",
        "token: <your-token>",
        "password: \"***\"",
        "password=",
        "let url = \"password=\" + pw + \"&user=\";",
        "args.push(\"--password=\");",
        "password = \"\"",
        "api_key: ${{ secrets.API_KEY }}",
        "unexpected token: \")\"",
        "expected token: Ident",
        "max_tokens = 4096",
        "if password == stored { ok() }",
        "match token { Token::Ident(s) => s, _ => \"\" }",
        "let (token, rest) = split(input);",
        "secret: Secret::new(value),",
        "password: string | null;",
        "def connect(password: str = None):",
        "Forgot your password? Reset it here.",
        "Authorization: Bearer $TOKEN",
        "tokens: Vec<Token>,",
        "pub fn new(api_key: impl Into<String>) -> Self",
        "export OPENAI_API_KEY=sk-...",
        "headers = {'Authorization': f'Bearer {token}'}",
        "{\"Authorization\": \"Bearer \" + token}",
        "headers[\"Authorization\"] = \"Bearer \" + token",
        "Authorization: Bearer {token}",
        "The user enters a password: it must be 12 characters.",
        "psql --no-password -h db",
        "gh auth login --with-token < token.txt",
        "docker login --password-stdin",
    ];
    for line in lines {
        assert_untouched(line);
    }
}

#[test]
fn json_values_are_redacted_keys_kept() {
    let r = redactor();
    let gh = format!("ghp_{}", body(36));
    let mut value = json!({
        "password": "hunter2",
        "db": { "api-key": "k3y", "url": "postgres://u:pw123@db/x", "port": 5432 },
        "steps": [
            { "command": format!("git push https://{gh}@github.com/o/r") },
            { "headers": { "Authorization": "Bearer abcdef" } },
            "plain text",
            42,
            null
        ],
        "session_token": "short",
        "next_token": format!("{}9", body(30)),
        "password_hint": "first pet",
        "placeholder": { "password": "${DB_PASSWORD}" },
        "secret": true,
        "count": 3
    });
    r.redact_json(&mut value);
    assert_eq!(
        value,
        json!({
            "password": "[REDACTED:assignment]",
            "db": { "api-key": "[REDACTED:assignment]", "url": "postgres://u:[REDACTED:url_password]@db/x", "port": 5432 },
            "steps": [
                { "command": "git push https://[REDACTED:github_token]@github.com/o/r" },
                { "headers": { "Authorization": "[REDACTED:assignment]" } },
                "plain text",
                42,
                null
            ],
            "session_token": "short",
            "next_token": "[REDACTED:assignment]",
            "password_hint": "first pet",
            "placeholder": { "password": "${DB_PASSWORD}" },
            "secret": true,
            "count": 3
        })
    );
    let once = value.clone();
    r.redact_json(&mut value);
    assert_eq!(value, once);
}

#[test]
fn json_deep_nesting_does_not_overflow() {
    let mut value = json!("password=hunter2");
    for _ in 0..100_000 {
        value = serde_json::Value::Array(vec![value]);
    }
    redactor().redact_json(&mut value);
    let mut inner = &value;
    while let serde_json::Value::Array(items) = inner {
        inner = &items[0];
    }
    assert_eq!(inner, &json!("password=[REDACTED:assignment]"));
    // Drop iteratively as well; serde_json's recursive drop would overflow the test stack.
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        if let serde_json::Value::Array(items) = v {
            stack.extend(items);
        }
    }
}

#[test]
fn disabled_changes_nothing() {
    let secret_text = format!("password=hunter2 ghp_{}", body(36));
    for r in [
        Redactor::disabled(),
        Redactor::new(&RedactionConfig::disabled()).unwrap(),
    ] {
        assert!(!r.is_enabled());
        assert!(matches!(r.redact(&secret_text), Cow::Borrowed(_)));
        let mut value = json!({ "password": "hunter2" });
        r.redact_json(&mut value);
        assert_eq!(value, json!({ "password": "hunter2" }));
    }
    assert!(redactor().is_enabled());
}

#[test]
fn custom_pattern() {
    let config = RedactionConfig::default().with_extra_pattern(r"ACME-\d{6}");
    let r = Redactor::new(&config).unwrap();
    assert_eq!(
        r.redact("ticket ACME-123456 and password=hunter2"),
        "ticket [REDACTED:custom] and password=[REDACTED:assignment]"
    );
    // A custom pattern matching the marker itself keeps redaction idempotent.
    let r = Redactor::new(&RedactionConfig::default().with_extra_pattern("REDACTED|x*")).unwrap();
    let once = r.redact("REDACTED password=hunter2").into_owned();
    assert_eq!(once, "[REDACTED:custom] password=[REDACTED:assignment]");
    assert_eq!(r.redact(&once), once);
}

#[test]
fn invalid_custom_pattern_is_invalid_input() {
    let config = RedactionConfig::default().with_extra_pattern("(unclosed");
    let err = Redactor::new(&config).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidInput { field, .. } if field == "redaction.extra_patterns"),
        "{err}"
    );
    // Also when disabled: bad configuration is reported early.
    let config = RedactionConfig::disabled().with_extra_pattern("[z-a]");
    assert!(matches!(
        Redactor::new(&config),
        Err(Error::InvalidInput { .. })
    ));
}

#[test]
fn redaction_is_idempotent() {
    let r = redactor();
    let text = format!(
        "password=hunter2 token={t} url=postgres://a:b1@h/d key=AIza{g}\n\
         -----BEGIN PRIVATE KEY-----\n{k}\n-----END PRIVATE KEY-----\n\
         Authorization: Bearer eyJ{j}.eyJ{j}.{j} secret: \"x y\" {{\"api_key\": \"z\"}}",
        t = body(30),
        g = body(35),
        k = body(64),
        j = body(12)
    );
    let once = r.redact(&text).into_owned();
    assert_ne!(once, text);
    assert!(!once.contains("hunter2"));
    let twice = r.redact(&once);
    assert!(matches!(twice, Cow::Borrowed(_)), "{once}\n{twice}");
}

#[test]
fn redact_in_place_does_not_reallocate_when_clean() {
    let r = redactor();
    let mut clean = String::from("let token = lexer.next_token();");
    let ptr = clean.as_ptr();
    r.redact_in_place(&mut clean);
    assert_eq!(clean.as_ptr(), ptr);
    let mut dirty = String::from("password=hunter2");
    r.redact_in_place(&mut dirty);
    assert_eq!(dirty, "password=[REDACTED:assignment]");
}

#[test]
fn non_ascii_text_is_handled() {
    assert_redacted(
        "Passwort für die DB: password=hünter2 ✓",
        "Passwort für die DB: password=[REDACTED:assignment] ✓",
    );
    assert_untouched("日本語のテキスト token の説明");
    assert_redacted("ü token=abc123456", "ü token=[REDACTED:assignment]");
    assert_redacted("é\tpassword: hunter2", "é\tpassword: [REDACTED:assignment]");
}

#[test]
fn config_defaults_and_serde() {
    let config: RedactionConfig = serde_json::from_str("{}").unwrap();
    assert_eq!(config, RedactionConfig::default());
    assert!(config.enabled);
    assert!(config.extra_patterns.is_empty());
    let config: RedactionConfig = serde_json::from_str(r#"{"enabled": false}"#).unwrap();
    assert_eq!(config, RedactionConfig::disabled());
    let config = RedactionConfig::disabled()
        .with_extra_pattern("a")
        .with_extra_pattern("b");
    assert_eq!(config.extra_patterns, ["a", "b"]);
}

#[test]
fn redactor_is_send_sync_and_cheap_to_clone() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<Redactor>();
    let r = redactor();
    let clone = r.clone();
    assert!(Arc::ptr_eq(
        r.inner.as_ref().unwrap(),
        clone.inner.as_ref().unwrap()
    ));
}
