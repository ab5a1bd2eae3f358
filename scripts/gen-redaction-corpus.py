#!/usr/bin/env python3
"""Writes the labeled redaction corpus under memory-core/tests/data/redaction/.

secrets.tsv: kind <TAB> secret <TAB> line; the line carries the secret the way tools print it,
and the secret must never be stored. benign.tsv: kind <TAB> line; lines that must be stored
unchanged. Deterministic for a given tree (fixed seed). The benign code lines come from this
repository's own sources (files that hold no test secrets), so a rerun after the code changed
draws other code lines, and other cut keys (the truncated vendor keys are drawn after them);
the whole secrets and the generated benign lines stay the same.
"""
import base64
import os
import random
import string
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "memory-core", "tests", "data", "redaction")
rng = random.Random(20261123)
ALNUM = string.ascii_letters + string.digits
UPPER_DIGITS = string.ascii_uppercase + string.digits
HEX = "0123456789abcdef"
B64 = ALNUM + "+/"
URLSAFE = ALNUM + "_-"


def r(alphabet, n):
    # Random text that always has a digit and both cases where the alphabet allows it.
    while True:
        s = "".join(rng.choice(alphabet) for _ in range(n))
        if alphabet in (HEX,) or (any(c.isdigit() for c in s) and any(c.isalpha() for c in s)):
            if not (any(c.islower() for c in alphabet) and any(c.isupper() for c in alphabet)) or (
                any(c.islower() for c in s) and any(c.isupper() for c in s)
            ):
                return s


def password():
    specials = "!@#%^&*()-_+=/?.,:~"
    first = rng.choice(string.ascii_letters + "!@")
    body = r(ALNUM, rng.randint(8, 14))
    extra = "".join(rng.choice(specials) for _ in range(2))
    pos = rng.randint(1, len(body))
    return first + body[:pos] + extra + body[pos:]


def pem(kind, one_line):
    lines = [r(B64, 64) for _ in range(rng.randint(3, 6))] + [r(B64, 20) + "=="]
    header = f"-----BEGIN {kind}PRIVATE KEY-----"
    footer = f"-----END {kind}PRIVATE KEY-----"
    sep = " " if one_line else "\n"
    return lines, header + sep + sep.join(lines) + sep + footer


def jwt():
    head = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').decode().rstrip("=")
    claims = '{"sub":"%s","exp":%d}' % (r(ALNUM, 10), rng.randint(10**9, 2 * 10**9))
    body = base64.urlsafe_b64encode(claims.encode()).decode().rstrip("=")
    return f"{head}.{body}.{r(URLSAFE, 43)}"


HOSTS = ["db.internal", "10.0.3.7", "cache.prod.example.com", "localhost", "pg-main"]
USERS = ["admin", "deploy", "svc_app", "root", "ci-bot"]


def gen_secret(kind):
    """(secret, line) for one instance of `kind`."""
    host, user = rng.choice(HOSTS), rng.choice(USERS)
    if kind == "aws_access_key":
        s = rng.choice(["AKIA", "ASIA"]) + r(UPPER_DIGITS, 16)
        t = rng.choice(["export AWS_ACCESS_KEY_ID={s}", "aws configure set aws_access_key_id {s}",
                        '"AccessKeyId": "{s}",', "rotated key {s} for user " + user])
    elif kind == "aws_secret_key":
        s = r(ALNUM + "/+", 40)
        t = rng.choice(["aws_secret_access_key = {s}", '"SecretAccessKey": "{s}",',
                        "export AWS_SECRET_ACCESS_KEY={s}", "AWS_SECRET_ACCESS_KEY={s} terraform plan"])
    elif kind == "aws_session_token":
        s = "IQoJb3JpZ2luX2Vj" + r(ALNUM + "/+", 120)
        t = rng.choice(['"SessionToken": "{s}"', "export AWS_SESSION_TOKEN={s}"])
    elif kind == "gcp_api_key":
        s = "AIza" + r(URLSAFE, 35)
        t = rng.choice(["GOOGLE_API_KEY={s}", "https://maps.googleapis.com/maps/api/geocode/json?key={s}",
                        "firebase init with apiKey {s}"])
    elif kind == "github_token":
        s = rng.choice(["ghp_", "gho_", "ghs_", "ghu_"]) + r(ALNUM, 36)
        t = rng.choice(["git clone https://{s}@github.com/acme/api.git", "GITHUB_TOKEN={s} gh pr list",
                        "echo {s} | gh auth login --with-token", "remote: token {s} expired"])
    elif kind == "github_fine_grained_pat":
        s = "github_pat_" + r(ALNUM, 22) + "_" + r(ALNUM, 59)
        t = rng.choice(["export GH_TOKEN={s}", "using {s} for the release workflow"])
    elif kind == "gitlab_token":
        s = "glpat-" + r(URLSAFE, 20)
        t = rng.choice(['curl --header "PRIVATE-TOKEN: {s}" https://gitlab.example.com/api/v4/projects',
                        "git remote set-url origin https://oauth2:{s}@gitlab.com/g/p.git", "CI_JOB_TOKEN {s}"])
    elif kind == "slack_token":
        s = rng.choice(["xoxb-", "xoxp-"]) + "-".join(str(rng.randint(10**10, 10**12)) for _ in range(2)) + "-" + r(ALNUM, 24)
        t = rng.choice(["SLACK_BOT_TOKEN={s}", 'client = WebClient(token="{s}")', "slack token {s} revoked"])
    elif kind == "slack_webhook":
        s = f"T{r(UPPER_DIGITS, 8)}/B{r(UPPER_DIGITS, 10)}/{r(ALNUM, 24)}"
        t = rng.choice(["curl -X POST https://hooks.slack.com/services/{s} -d @msg.json",
                        "webhook_url: https://hooks.slack.com/services/{s}"])
    elif kind == "openai_key":
        s = "sk-proj-" + r(URLSAFE, 48)
        t = rng.choice(["OPENAI_API_KEY={s}", 'openai.api_key = "{s}"', "Incorrect API key provided: {s}"])
    elif kind == "anthropic_key":
        s = "sk-ant-api03-" + r(URLSAFE, 93) + "AA"
        t = rng.choice(["export ANTHROPIC_API_KEY={s}", "x-api-key: {s}", 'Anthropic(api_key="{s}")'])
    elif kind == "stripe_key":
        s = rng.choice(["sk_live_", "rk_live_", "sk_test_"]) + r(ALNUM, 24)
        t = rng.choice(["stripe.api_key = '{s}'", "curl https://api.stripe.com/v1/charges -u {s}:",
                        "STRIPE_SECRET={s}"])
    elif kind == "sendgrid_key":
        s = "SG." + r(URLSAFE, 22) + "." + r(URLSAFE, 43)
        t = rng.choice(["SENDGRID_API_KEY={s}", "sg = SendGridAPIClient('{s}')", "mail key {s}"])
    elif kind == "huggingface_token":
        s = "hf_" + r(ALNUM, 34)
        t = rng.choice(["huggingface-cli login --token {s}", "HF_TOKEN={s} python train.py",
                        "from_pretrained(name, token='{s}')"])
    elif kind == "npm_token":
        s = "npm_" + r(ALNUM, 36)
        t = rng.choice(["//registry.npmjs.org/:_authToken={s}", "NPM_TOKEN={s} npm publish"])
    elif kind == "pypi_token":
        s = "pypi-AgEIcHlwaS5vcmc" + r(URLSAFE, 60)
        t = rng.choice(["twine upload -u __token__ -p {s} dist/*", "password = {s}", "TWINE_PASSWORD={s}"])
    elif kind == "jwt":
        s = jwt()
        t = rng.choice(["Authorization: Bearer {s}", "curl -H 'Authorization: Bearer {s}' https://api.local/v1",
                        "session cookie set: {s}", '{{"access_token": "{s}", "expires_in": 3600}}'])
    elif kind == "private_key_pem":
        lines, s_full = pem(rng.choice(["", "RSA ", "EC ", "OPENSSH "]), one_line=False)
        return lines[1], s_full
    elif kind == "private_key_one_line":
        lines, s_full = pem(rng.choice(["", "RSA ", "EC "]), one_line=True)
        return lines[1], s_full
    elif kind == "private_key_json":
        lines, _ = pem("", one_line=False)
        s_full = '{"type": "service_account", "private_key": "-----BEGIN PRIVATE KEY-----\\n' + "\\n".join(lines) + '\\n-----END PRIVATE KEY-----\\n"}'
        return lines[1], s_full
    elif kind == "url_password":
        s = password().replace("@", "9").replace(":", "x").replace("&", "A").replace("?", "Q")
        scheme = rng.choice(["postgres", "mysql", "redis", "amqp", "https", "mongodb+srv"])
        return s, f"{scheme}://{user}:{s}@{host}:5432/app"
    elif kind == "password_assignment":
        s = password()
        t = rng.choice(["password={s}", "DB_PASSWORD={s}", "db_pass: {s}", "pwd={s}",
                        '"password": "{s}"', "PGPASSWORD={s} psql -h " + host, "MYSQL_ROOT_PASSWORD={s}",
                        "admin_password = '{s}'", "--password {s}", "--password={s}", "dbPass={s}"])
    elif kind == "password_number":
        s = str(rng.randint(10**7, 10**10))
        t = rng.choice(['{{"password": {s}}}', '{{"pin": 1, "pass": {s}}}', '{{"pwd": {s}}}'])
    elif kind == "authorization_header":
        s = r(URLSAFE + ".", rng.randint(24, 48))
        t = rng.choice(["Authorization: Bearer {s}", "authorization: Token {s}", '"Authorization": "Bearer {s}"',
                        "-H 'Authorization: Bearer {s}'"])
    elif kind == "basic_auth":
        s = base64.b64encode(f"{user}:{password()}".encode()).decode()
        t = rng.choice(["Authorization: Basic {s}", '{{"auths": {{"registry.local": {{"auth": "{s}"}}}}}}'])
    elif kind == "curl_user":
        s = password().replace("'", "x").replace('"', "x")
        t = rng.choice(["curl -u " + user + ":{s} https://api.local/v1", "curl --user " + user + ":{s} -X GET http://" + host,
                        "wget --user=" + user + " --password={s} http://" + host + "/f"])
    elif kind == "mysql_password":
        s = r(ALNUM, rng.randint(10, 16))
        t = rng.choice(["mysql -u root -p{s} app", "mysqldump -h " + host + " -uroot -p{s} shop > dump.sql",
                        "sshpass -p {s} ssh " + user + "@" + host])
    elif kind == "azure_account_key":
        s = base64.b64encode(bytes(rng.randrange(256) for _ in range(64))).decode()
        t = rng.choice(["DefaultEndpointsProtocol=https;AccountName=store1;AccountKey={s};EndpointSuffix=core.windows.net",
                        "AZURE_STORAGE_KEY={s}", "az storage blob list --account-key {s}"])
    elif kind == "connection_string":
        s = password().replace(";", "x").replace(",", "x")
        t = rng.choice(["Server=" + host + ";Database=app;User Id=sa;Password={s};",
                        "Host=" + host + ";Username=app;Pwd={s};Pooling=true"])
    elif kind == "twilio_key":
        s = "SK" + r(HEX, 32)
        t = rng.choice(["TWILIO_API_KEY={s}", "twilio api key {s} created"])
    elif kind == "discord_token":
        s = rng.choice("MNO") + r(URLSAFE, 25) + "." + r(URLSAFE, 6) + "." + r(URLSAFE, 38)
        t = rng.choice(["DISCORD_TOKEN={s}", "client.run('{s}')"])
    elif kind == "telegram_token":
        s = f"{rng.randint(10**8, 10**10 - 1)}:AA{r(URLSAFE, 33)}"
        t = rng.choice(["https://api.telegram.org/bot{s}/sendMessage", "TELEGRAM_BOT_TOKEN={s}"])
    elif kind == "google_oauth_token":
        s = "ya29." + r(URLSAFE, 80)
        t = rng.choice(["access_token: {s}", "gcloud returned {s}"])
    elif kind == "digitalocean_token":
        s = "dop_v1_" + r(HEX, 64)
        t = rng.choice(["doctl auth init -t {s}", "DIGITALOCEAN_TOKEN={s}"])
    elif kind == "shopify_token":
        s = "shpat_" + r(HEX, 32)
        t = rng.choice(["X-Shopify-Access-Token: {s}", "SHOPIFY_TOKEN={s}"])
    elif kind == "databricks_token":
        s = "dapi" + r(HEX, 32)
        t = rng.choice(["databricks configure --token {s}", "DATABRICKS_TOKEN={s}"])
    elif kind == "docker_token":
        s = "dckr_pat_" + r(URLSAFE, 27)
        t = rng.choice(["echo {s} | docker login -u bob --password-stdin", "DOCKERHUB_TOKEN={s}"])
    elif kind == "age_secret_key":
        s = "AGE-SECRET-KEY-1" + r(UPPER_DIGITS, 58)
        t = "# created: 2026-01-01\n{s}"
    elif kind == "high_entropy_near_word":
        s = r(ALNUM, rng.randint(28, 40))
        t = rng.choice(["the deploy key is {s}", "use signing secret {s} for staging",
                        "api token for ci -> {s}", "credentials rotated, new one {s}"])
    else:
        sys.exit(f"unknown kind {kind}")
    return s, t.format(s=s)


KINDS = ["aws_access_key", "aws_secret_key", "aws_session_token", "gcp_api_key", "github_token",
         "github_fine_grained_pat", "gitlab_token", "slack_token", "slack_webhook", "openai_key",
         "anthropic_key", "stripe_key", "sendgrid_key", "huggingface_token", "npm_token", "pypi_token",
         "jwt", "private_key_pem", "private_key_one_line", "private_key_json", "url_password",
         "password_assignment", "password_number", "authorization_header", "basic_auth", "curl_user",
         "mysql_password", "azure_account_key", "connection_string", "twilio_key", "discord_token",
         "telegram_token", "google_oauth_token", "digitalocean_token", "shopify_token",
         "databricks_token", "docker_token", "age_secret_key", "high_entropy_near_word"]
PER_KIND = 10


# Vendor keys with a recognizable prefix, and the prefix's length: their truncated forms (a key
# cut short by a field's limit, as an agent that trims its text to fit leaves it) are secrets
# too. `telegram_token`'s prefix is its bot id and `:AA`.
TRUNCATABLE = {"aws_access_key": 4, "gcp_api_key": 4, "github_token": 4,
               "github_fine_grained_pat": 11, "gitlab_token": 6, "slack_token": 5,
               "openai_key": 8, "anthropic_key": 13, "stripe_key": 8, "sendgrid_key": 3,
               "huggingface_token": 3, "npm_token": 4, "google_oauth_token": 5,
               "digitalocean_token": 7, "shopify_token": 6, "databricks_token": 4,
               "docker_token": 9, "twilio_key": 2, "age_secret_key": 16, "jwt": 37}


def gen_truncated(kind):
    """(secret, line) for a key of `kind` cut short: its prefix and 10 to 40 more characters,
    at the end of the line (where a cut leaves it)."""
    s, _ = gen_secret(kind)
    if kind == "telegram_token":
        p = s.index(":AA") + 3
    else:
        p = TRUNCATABLE[kind]
    cut = s[: p + rng.randint(10, min(40, len(s) - p - 1))]
    t = rng.choice(["{c}", "tag {c}", "prefix kept: {c}", "cut at the limit {c}", "key {c}"])
    return cut, t.format(c=cut)


def uuid():
    h = r(HEX, 32)
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"


def benign_generated():
    out = []
    words = ["cache", "index", "episode", "worker", "build", "deploy", "retry", "queue", "shard", "span"]
    for _ in range(60):
        out.append(("hash", f"commit {r(HEX, 40)} Merge branch '{rng.choice(words)}-fix'"))
        out.append(("hash", f"sha256:{r(HEX, 64)}"))
        out.append(("hash", f"cache key {r(HEX, 40)} miss, rebuilding"))
    for _ in range(50):
        out.append(("hash", f'"integrity": "sha512-{r(B64, 86)}=="'))
    for _ in range(80):
        out.append(("uuid", f"request {uuid()} finished in {rng.randint(1, 900)} ms"))
        out.append(("uuid", f"episode_id={uuid()} status=completed"))
    for _ in range(80):
        d = "/".join(rng.choice(["src", "lib", "tests", "memory-core", "tiered", "usr", "share", "var", "log", "home", "dev"]) for _ in range(rng.randint(2, 5)))
        out.append(("path", f"/{d}/{rng.choice(words)}_{rng.randint(1, 99)}.{rng.choice(['rs', 'py', 'toml', 'json', 'log'])}"))
        out.append(("path", f"GOOGLE_APPLICATION_CREDENTIALS=/etc/{rng.choice(words)}/sa-{rng.randint(1, 9)}.json"))
    for _ in range(80):
        ts = f"2026-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}T1{rng.randint(0, 9)}:{rng.randint(10, 59)}:{rng.randint(10, 59)}.{rng.randint(100, 999)}Z"
        out.append(("log", f"{ts} INFO {rng.choice(words)}: processed {rng.randint(1, 5000)} items in {rng.randint(1, 999)}ms"))
        out.append(("log", f"{ts} WARN token refresh scheduled in {rng.randint(1, 60)}s (attempt {rng.randint(1, 5)})"))
    for _ in range(40):
        out.append(("url", f"https://{rng.choice(['docs.rs', 'github.com', 'crates.io', 'pypi.org'])}/{rng.choice(words)}/{rng.choice(words)}?page={rng.randint(1, 9)}&sort=desc"))
        out.append(("url", f"http://localhost:{rng.randint(1024, 65000)}/api/v1/{rng.choice(words)}#section-{rng.randint(1, 9)}"))
    for _ in range(40):
        out.append(("shell", f"cargo test -p memory-{rng.choice(words)} -- --test-threads={rng.randint(1, 8)}"))
        out.append(("shell", f"docker run --rm -p {rng.randint(1000, 9999)}:80 -e RUST_LOG=debug app:{rng.randint(1, 9)}.{rng.randint(0, 9)}"))
        out.append(("shell", f"mysql -u app -p -h {rng.choice(HOSTS)} shop"))
        out.append(("shell", f"kubectl get secret {rng.choice(words)}-tls -o yaml"))
    # Near misses: the words and shapes of secrets without one.
    names = ["db", "api", "admin", "user", "service", "cache", "smtp", "redis"]
    lookalikes = [
        "{n}_password = os.environ['{N}_PASSWORD']",
        "export {N}_PASSWORD=${N}_SECRET",
        "{n}_token = lexer.next_token()",
        "let {n}_key = env::var(\"{N}_API_KEY\")?;",
        "Authorization: Bearer ${N}_TOKEN",
        "password: ${{{{ secrets.{N}_PASSWORD }}}}",
        "echo ${N}_PASSWORD | docker login -u {n} --password-stdin",
        "if !{n}_password_ok {{ return Err(AuthError::Denied) }}",
        "fn rotate_{n}_secret(&self, old: &Secret) -> Result<Secret>",
        "{n}_password_hint: first pet",
        "{n}_bypass=true",
        "The {n} password must be at least 12 characters long.",
        "mysql -u {n} -p -h db.internal shop",
        "psql --no-password -h {n}.internal",
        "max_tokens = {k}",
        "token usage: {k} prompt, {k} completion",
        "cache key {h} evicted",
        "secret rotation for {n} scheduled at 02:00",
        "https://{n}.example.com:8443/users/@{n}",
        "curl -u {n} https://{n}.example.com",
        "GOOGLE_APPLICATION_CREDENTIALS=/etc/{n}/service-account.json",
        "password = \"\"",
        "token: <your-{n}-token>",
        "api_key = your_api_key_here",
        "PWD=/home/{n}/src OLDPWD=/tmp",
    ]
    for template in lookalikes:
        for _ in range(4):
            n = rng.choice(names)
            out.append(("near_miss", template.format(n=n, N=n.upper(), k=rng.randint(16, 9000), h=r(HEX, 40))))
    return out


def benign_code():
    out = []
    skip = ("redact", "secret_scan", "limits_and_quotas", "cli.rs")
    src_dirs = ["memory-core/src", "memory-storage-turso/src", "memory-storage-redb/src", "memory-mcp/src", "memory-stack/src"]
    for d in src_dirs:
        for dirpath, _, files in os.walk(os.path.join(ROOT, d)):
            for f in sorted(files):
                if not f.endswith(".rs") or any(s in f for s in skip):
                    continue
                with open(os.path.join(dirpath, f), encoding="utf-8") as fh:
                    for line in fh:
                        line = line.strip()
                        if 24 <= len(line) <= 160 and "\t" not in line and "REDACTED" not in line:
                            out.append(("code", line))
    rng.shuffle(out)
    return out[:700]


def main():
    os.makedirs(OUT, exist_ok=True)
    secrets = [(kind, *gen_secret(kind)) for kind in KINDS for _ in range(PER_KIND)]
    benign = benign_generated() + benign_code()
    # Drawn after the rest, so the rows above stay as they were.
    truncated_kinds = list(TRUNCATABLE) + ["telegram_token"]
    secrets += [(f"{kind}_truncated", *gen_truncated(kind))
                for kind in truncated_kinds for _ in range(PER_KIND)]
    with open(os.path.join(OUT, "secrets.tsv"), "w", encoding="utf-8") as fh:
        fh.write("# kind\tsecret\tline (\\n and \\t escaped). Generated by scripts/gen-redaction-corpus.py.\n")
        for kind, s, line in secrets:
            esc = line.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t")
            fh.write(f"{kind}\t{s}\t{esc}\n")
    with open(os.path.join(OUT, "benign.tsv"), "w", encoding="utf-8") as fh:
        fh.write("# kind\tline (\\n and \\t escaped). Generated by scripts/gen-redaction-corpus.py.\n")
        for kind, line in benign:
            esc = line.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t")
            fh.write(f"{kind}\t{esc}\n")
    kinds = len({k for k, _, _ in secrets})
    print(f"{len(secrets)} secrets of {kinds} kinds, {len(benign)} benign lines")


main()
