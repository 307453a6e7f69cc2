"""Command line: options, usage, exit status 2, readiness line, port in use."""

import socket

import pytest

from conftest import HOST, LISTENING_RE, run_server_cmd


def test_help_prints_usage_on_stdout_and_exits_0():
    """--help: usage on stdout, exit 0."""
    p = run_server_cmd("--help")
    assert p.returncode == 0, p
    assert "usage" in p.stdout.lower()
    for opt in ("--host", "--port", "--grace", "--max-conns", "--data-dir", "--max-body"):
        assert opt in p.stdout, f"{opt} missing from usage"


def test_version_prints_one_line_and_exits_0():
    """--version: exactly one non-empty line on stdout, exit 0."""
    p = run_server_cmd("--version")
    assert p.returncode == 0, p
    lines = p.stdout.splitlines()
    assert len(lines) == 1 and lines[0].strip(), repr(p.stdout)


# Each bad invocation pins --host 127.0.0.1 --port 0 (unless the port itself is
# under test) so that a server wrongly accepting it binds nowhere dangerous.
SAFE = ["--host", HOST, "--port", "0"]
BAD_ARGS = [
    pytest.param(["--host", HOST, "--port", "70000"], id="port-too-big"),
    pytest.param(["--host", HOST, "--port", "abc"], id="port-not-number"),
    pytest.param(["--host", HOST, "--port", "-1"], id="port-negative"),
    pytest.param(["--host", HOST, "--port", "80x"], id="port-trailing-junk"),
    pytest.param(["--host", HOST, "--port"], id="port-missing-value"),
    pytest.param(SAFE + ["--grace", "-1"], id="grace-negative"),
    pytest.param(SAFE + ["--grace", "abc"], id="grace-not-number"),
    pytest.param(SAFE + ["--max-conns", "0"], id="max-conns-zero"),
    pytest.param(SAFE + ["--max-conns", "-3"], id="max-conns-negative"),
    pytest.param(SAFE + ["--max-conns", "many"], id="max-conns-not-number"),
    pytest.param(SAFE + ["--max-body", "-1"], id="max-body-negative"),
    pytest.param(SAFE + ["--max-body", "lots"], id="max-body-not-number"),
    pytest.param(SAFE + ["--bogus"], id="unknown-flag"),
    pytest.param(SAFE + ["extra"], id="extra-positional"),
]


@pytest.mark.parametrize("args", BAD_ARGS)
def test_bad_arguments_print_usage_to_stderr_and_exit_2(args, tmp_path):
    """A bad flag or value: usage on stderr, nothing on stdout, exit 2."""
    p = run_server_cmd("--data-dir", str(tmp_path / "d"), *args)
    assert p.returncode == 2, f"status {p.returncode}; stderr {p.stderr!r}"
    assert "usage" in p.stderr.lower(), p.stderr
    assert p.stdout == ""


def test_port_0_prints_exactly_one_listening_line_with_real_port(server):
    """--port 0: one `listening on 127.0.0.1:PORT` line with the real, usable port."""
    assert server.port != 0
    r = server.request("GET", "/")
    assert r.status == 200
    assert len(server.matching(r"listening on .*")) == 1, server.lines
    assert len(server.matching(LISTENING_RE)) == 1


def test_grace_accepts_decimals(start_server):
    """--grace 0.5 is accepted and echoed in the shutdown log."""
    srv = start_server("--grace", "0.5")
    srv.signal()
    assert srv.wait_exit(5) == 0
    m = srv.wait_line(r"shutdown requested by SIGINT; draining (\d+) connection\(s\), grace ([0-9.]+) s")
    assert float(m.group(2)) == pytest.approx(0.5)


def test_data_dir_is_created_if_missing(start_server, tmp_path):
    """--data-dir DIR that does not exist is created, and uploads land in it."""
    d = tmp_path / "not" / "yet"
    d.parent.mkdir()
    assert not d.exists()
    srv = start_server(data_dir=d)
    assert d.is_dir()
    with srv.connect() as c:
        r = c.request("PUT", "/files/hello.txt", body=b"hi")
    assert r.status == 201
    assert (d / "hello.txt").read_bytes() == b"hi"


def test_port_in_use_is_one_line_error_and_exit_1(start_server):
    """Port already in use: one stderr line naming 127.0.0.1:PORT and `in use`, exit 1."""
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.bind((HOST, 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    try:
        srv = start_server(port=port, wait=False)
        assert srv.wait_exit(5) == 1
    finally:
        holder.close()
    hits = [l for l in srv.lines if f"127.0.0.1:{port}" in l and "in use" in l]
    assert len(hits) == 1, srv.lines
    assert not srv.matching(LISTENING_RE)


def test_port_in_use_by_another_server(start_server, tmp_path):
    """A second server on the first one's port fails with exit 1; the first keeps serving."""
    first = start_server()
    second = start_server(port=first.port, wait=False, data_dir=tmp_path / "d2")
    assert second.wait_exit(5) == 1
    assert any(f"127.0.0.1:{first.port}" in l and "in use" in l for l in second.lines)
    assert first.request("GET", "/").status == 200
