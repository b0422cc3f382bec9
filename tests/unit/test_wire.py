"""The two wire protocols a launch speaks: the X11 cookie lookup and PulseAudio's tagstruct."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from sandboxapp.host import pulsewire
from sandboxapp.host.x11 import FAMILY_LOCALHOST, FAMILY_SERVER_INTERPRETED, HostList, find_cookie
from tests.harness import require_programs

COOKIE = "00112233445566778899aabbccddeeff"


def xauth(path: Path, *args: str) -> None:
    require_programs("xauth")
    subprocess.run(["xauth", "-q", "-f", str(path), *args], check=True, capture_output=True)


def test_the_cookie_xauth_wrote_for_the_display_is_found(tmp_path: Path) -> None:
    path = tmp_path / "xauthority"
    xauth(path, "add", ":3", "MIT-MAGIC-COOKIE-1", "ffeeddccbbaa99887766554433221100")
    xauth(path, "add", ":7", "MIT-MAGIC-COOKIE-1", COOKIE)
    data = path.read_bytes()
    assert find_cookie(data, 7, socket.gethostname()) == bytes.fromhex(COOKIE)
    assert find_cookie(data, 5, socket.gethostname()) is None
    # Another host's entry is not ours to send.
    assert find_cookie(data, 7, "some-other-host") is None


def test_a_wildcard_entry_matches_any_host(tmp_path: Path) -> None:
    # What `xauth nlist` prints for a FamilyWild (0xffff) record, read back with nmerge.
    line = f"ffff 0000 0001 37 0012 {b'MIT-MAGIC-COOKIE-1'.hex()} 0010 {COOKIE}\n"
    path = tmp_path / "xauthority"
    require_programs("xauth")
    subprocess.run(["xauth", "-q", "-f", str(path), "nmerge", "-"], input=line, text=True,
                   check=True, capture_output=True)
    assert find_cookie(path.read_bytes(), 7, "any-host") == bytes.fromhex(COOKIE)


@pytest.mark.parametrize("data", [b"", b"\x01", b"not an xauthority file at all",
                                  bytes(range(256))])
def test_a_file_that_is_not_an_xauthority_gives_no_cookie(data: bytes) -> None:
    assert find_cookie(data, 0, socket.gethostname()) is None


SANDBOX_IDS = range(1879048192, 1879048192 + 65536)


@pytest.mark.parametrize(("enabled", "hosts", "admits"), [
    (True, set(), None),
    (False, set(), "access control is off (xhost +)"),
    (True, {(FAMILY_LOCALHOST, b"")}, "LOCAL: (xhost +local:)"),
    (True, {(FAMILY_SERVER_INTERPRETED, b"localuser\0#1879048200")},
     "SI:localuser:#1879048200"),
    (True, {(FAMILY_SERVER_INTERPRETED, b"localgroup\0#1879048192")},
     "SI:localgroup:#1879048192"),
    # The desktop's own entry for its user (GNOME and GDM make one): not a sandbox's UID.
    (True, {(FAMILY_SERVER_INTERPRETED, b"localuser\0root")}, None),
    (True, {(FAMILY_SERVER_INTERPRETED, b"localuser\0#1000")}, None),
    (True, {(FAMILY_SERVER_INTERPRETED, b"localuser\0no-such-user-here")}, None),
    # What the server reads as a number in ways the launcher does not (strtol: any base,
    # sign, blanks, a tail, wrapping to 32 bits), or a name with a NUL: suspect, so refused.
    (True, {(FAMILY_SERVER_INTERPRETED, b"localuser\0#1879048192x")},
     "SI:localuser:#1879048192x"),
    (True, {(FAMILY_SERVER_INTERPRETED, b"localuser\0#0x70000000")}, "SI:localuser:#0x70000000"),
    (True, {(FAMILY_SERVER_INTERPRETED, b"localuser\0#+1879048192")},
     "SI:localuser:#+1879048192"),
    (True, {(FAMILY_SERVER_INTERPRETED, b"localuser\0#6174015488")},
     "SI:localuser:#6174015488"),
    (True, {(FAMILY_SERVER_INTERPRETED, b"localuser\0#" + b"9" * 5000)},
     "SI:localuser:#" + "9" * 5000),
    (True, {(FAMILY_SERVER_INTERPRETED, "localuser\0#\u00b2".encode())},
     "SI:localuser:#\ufffd\ufffd"),
    (True, {(FAMILY_SERVER_INTERPRETED, b"localuser\0#1879048200\0junk")},
     "SI:localuser:#1879048200:junk"),
    (True, {(FAMILY_SERVER_INTERPRETED, b"hostname\0localhost")}, "SI:hostname:localhost"),
    # An address: TCP from the host's network, and the local socket where it is the host's.
    (True, {(0, b"\x7f\0\0\1")}, "an address entry (family 0: 7f000001)"),
], ids=["closed", "off", "local", "sandbox-uid", "sandbox-gid", "root-by-name", "desktop-uid",
        "unknown-name", "tail", "hex", "sign", "wraps", "long", "not-ascii", "nul",
        "hostname", "internet"])
def test_what_lets_a_sandbox_in_without_a_cookie_is_named(
        enabled: bool, hosts: set[tuple[int, bytes]], admits: str | None) -> None:
    assert HostList(enabled, frozenset(hosts)).cookieless(SANDBOX_IDS) == admits


def test_without_the_sandboxs_ids_only_what_admits_everyone_counts() -> None:
    hosts = HostList(True, frozenset({(FAMILY_SERVER_INTERPRETED, b"localuser\0#1879048200")}))
    assert hosts.cookieless(None) is None
    assert hosts.cookieless(SANDBOX_IDS) is not None


def test_a_tagstruct_decodes_to_typed_values_and_encodes_back_byte_for_byte() -> None:
    values: list[pulsewire.Value] = [
        51, 7, "module-null-sink", None, True, False, pulsewire.U8(3),
        pulsewire.U64(b"U", 1 << 40), pulsewire.U64(b"r", (1 << 64) - 1),
        pulsewire.Volume(0x10000), pulsewire.Arbitrary(b"\0\1\2"),
        pulsewire.SampleSpec(3, 2, 44100), pulsewire.ChannelMap(b"\1\2"),
        pulsewire.ChannelVolumes((1, 2)), pulsewire.Timeval(5, 6),
        pulsewire.proplist({"application.name": "sandboxapp", "x": "y"}),
        pulsewire.FormatInfo(1, pulsewire.proplist({"format.rate": "44100"}))]
    packet = pulsewire.control_packet(values)
    length, channel, _, _, flags = pulsewire.DESCRIPTOR.unpack(packet[:20])
    assert (length, channel, flags) == (len(packet) - 20, 0xFFFFFFFF, 0)
    assert pulsewire.decode(packet[20:]) == values
    assert pulsewire.encode(pulsewire.decode(packet[20:])) == packet[20:]
    assert pulsewire.signature(values) == "LLssbbBRRVxamvTPf"
    assert pulsewire.SampleSpec(3, 2, 44100).frame_size == 4
    assert pulsewire.SampleSpec(99, 2, 44100).frame_size is None


@pytest.mark.parametrize("data", [
    b"L\0\0", b"thello", b"t\xff\0", b"?", b"x\0\0\0\x09abc", b"v\x05\0\0",
    b"P" + b"tkey\0" + b"L\0\0\0\x05" + b"x\0\0\0\x02ab" + b"N",  # length mismatch
    b"P" + b"tkey\0",                                               # no end
    b"fL\0\0\0\x01P", b"fB\x01N",
], ids=["short-u32", "unending-text", "not-utf8", "unknown-type", "short-arbitrary",
        "short-volumes", "property-length", "unending-proplist", "format-encoding",
        "format-proplist"])
def test_what_is_not_a_tagstruct_is_an_error(data: bytes) -> None:
    with pytest.raises(pulsewire.PulseError):
        pulsewire.decode(data)


def test_the_cookie_is_read_where_libpulse_looks(tmp_path: Path) -> None:
    (tmp_path / ".config" / "pulse").mkdir(parents=True)
    (tmp_path / ".config" / "pulse" / "cookie").write_bytes(b"c" * 256)
    assert pulsewire.read_cookie({"HOME": str(tmp_path)}) == b"c" * 256
    (tmp_path / "explicit").write_bytes(b"e" * 256)
    assert pulsewire.read_cookie({"HOME": str(tmp_path),
                                  "PULSE_COOKIE": str(tmp_path / "explicit")}) == b"e" * 256
    assert pulsewire.read_cookie({"HOME": str(tmp_path / "none")}) == bytes(256)


def test_the_sandboxs_xauthority_file_reads_back_with_python_xlib(tmp_path: Path) -> None:
    """The nested server's cookie file (libXau's format): python-xlib's own reader parses it
    into two entries for any display number, one for any host (FamilyWild, which libXau in the
    container matches) and one for this host (which python-xlib, the launcher's, matches)."""
    from Xlib import xauth

    from sandboxapp.host import xconnection

    cookie = bytes(range(16))
    path = tmp_path / "Xauthority"
    path.write_bytes(xconnection.cookie_entries(cookie, b"myhost"))
    assert list(xauth.Xauthority(str(path))) == [
        (xconnection.FAMILY_WILD, b"", b"", b"MIT-MAGIC-COOKIE-1", cookie),
        (xconnection.FAMILY_LOCAL, b"myhost", b"", b"MIT-MAGIC-COOKIE-1", cookie)]
    assert xauth.Xauthority(str(path)).get_best_auth(
        xconnection.FAMILY_LOCAL, b"myhost", 23) == (b"MIT-MAGIC-COOKIE-1", cookie)
