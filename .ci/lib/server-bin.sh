# Sourced by .ci/api-fuzz, .ci/sdk-roundtrip and .ci/browser-test: sets SERVER_BIN, the
# binary they run. Given from outside (.ci/run passes the debug binary its `cargo test`
# has just built, so CI compiles the service once more only for clippy), it is used as
# it is; otherwise the release binary is built and used.
if [[ -n "${SERVER_BIN:-}" ]]; then
    [[ -x "$SERVER_BIN" ]] || { echo "SERVER_BIN=$SERVER_BIN is not an executable"; exit 1; }
    SERVER_BIN=$(cd "$(dirname "$SERVER_BIN")" && pwd)/$(basename "$SERVER_BIN")
else
    echo "== cargo build --release"
    cargo build --release --locked --quiet
    SERVER_BIN=$PWD/target/release/text-session-api
fi
echo "server binary: $SERVER_BIN"
