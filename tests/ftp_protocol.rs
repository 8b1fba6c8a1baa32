//! Exact FTP command sequences with Python's ftplib: replies, listing formats, UTF-8 names,
//! restarts, aborts, passive ports and FTPS.

mod common;
#[path = "ftp_common.rs"]
mod ftp_common;

use std::io::{BufRead, Read};

use common::*;
use ftp_common::*;

fn ftp_only() -> Setup {
    Setup::default().only(&["ftp"])
}

/// Runs `script` with the port, alice's password and alice's home as arguments.
fn run_script(server: &TestServer, port: u16, script: &str, extra: &[String]) -> String {
    let mut args = vec![
        port.to_string(),
        ALICE_PASSWORD.to_owned(),
        server.home("alice").display().to_string(),
    ];
    args.extend_from_slice(extra);
    let output = python(script, &args);
    assert_success(&output, "python ftplib script");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

const COMMANDS: &str = r#"
import ftplib, io, re, sys
port, password, home = int(sys.argv[1]), sys.argv[2], sys.argv[3]
f = ftplib.FTP(encoding='utf-8')
f.connect('127.0.0.1', port, timeout=20)
assert f.welcome.startswith('220 '), f.welcome

feat = f.sendcmd('FEAT')
lines = feat.splitlines()
assert lines[0].startswith('211-'), feat
assert lines[-1].startswith('211 '), feat
features = {line.strip().split(' ')[0] for line in lines[1:-1]}
for name in ['UTF8', 'MLST', 'MLSD', 'EPSV', 'SIZE', 'MDTM', 'REST']:
    assert name in features, (name, feat)
assert 'AUTH' not in features, 'AUTH TLS offered without a certificate: ' + feat

assert f.sendcmd('OPTS UTF8 ON').startswith('200'), 'OPTS UTF8 ON before login'
f.login('alice', password)
assert f.sendcmd('OPTS UTF8 ON').startswith('200'), 'OPTS UTF8 ON after login'
assert f.sendcmd('SYST') == '215 UNIX Type: L8'
assert f.pwd() == '/'
assert f.sendcmd('TYPE A').startswith('200')
assert f.sendcmd('TYPE I').startswith('200')

# UTF-8 names round-trip in MKD, STOR, NLST, MLSD, LIST, RETR and on disk.
folder, name = 'Grüße', 'ünï €.txt'
assert f.voidcmd(f'MKD {folder}').startswith('257 ')
f.storbinary(f'STOR {folder}/{name}', io.BytesIO(b'0123456789'))
assert f.nlst(folder) == [name], f.nlst(folder)
assert f.nlst('-a') == [folder], 'NLST with an ls option lists the working folder'
assert f.nlst('missing') == [], 'NLST of a missing path lists nothing'
listing = []
f.retrlines(f'LIST {folder}', listing.append)
assert len(listing) == 1, listing
assert listing[0].endswith(' ' + name), listing
assert listing[0].startswith('-rw'), listing
assert open(f'{home}/{folder}/{name}', 'rb').read() == b'0123456789'

# MLSD over the data connection, facts as RFC 3659 writes them.
entries = dict(f.mlsd(folder))
assert list(entries) == [name], entries
facts = entries[name]
assert facts['type'] == 'file', facts
assert facts['size'] == '10', facts
assert re.fullmatch(r'\d{14}', facts['modify']), facts
top = dict(f.mlsd())
assert top[folder]['type'] == 'dir', top

# MLST: a multi-line 250 reply, one space before the facts, every fact ends with ';'.
reply = f.sendcmd(f'MLST {folder}/{name}')
lines = reply.splitlines()
assert lines[0].startswith('250-'), reply
assert lines[-1].startswith('250 '), reply
assert len(lines) == 3, reply
facts_line = lines[1]
assert facts_line.startswith(' '), repr(facts_line)
assert not facts_line.startswith('  '), repr(facts_line)
facts_text, path = facts_line[1:].split(' ', 1)
assert path.endswith(name), reply
assert re.fullmatch(r'([a-z.]+=[^;]*;)+', facts_text), facts_text
assert 'type=file;' in facts_text, facts_text
assert 'size=10;' in facts_text, facts_text
assert re.search(r'modify=\d{14};', facts_text), facts_text

assert f.size(f'{folder}/{name}') == 10
mdtm = f.sendcmd(f'MDTM {folder}/{name}')
assert re.fullmatch(r'213 \d{14}', mdtm), mdtm
assert mdtm[4:] == facts['modify'], (mdtm, facts)

# CWD, CDUP and PWD.
f.cwd(folder)
assert f.pwd() == '/' + folder, f.pwd()
assert f.nlst() == [name]
f.sendcmd('CDUP')
assert f.pwd() == '/', f.pwd()

# REST after PASV (ftplib sends PASV, then REST, then RETR) and REST before PASV.
conn = f.transfercmd(f'RETR {folder}/{name}', rest=4)
data = b''
while chunk := conn.recv(100):
    data += chunk
conn.close()
f.voidresp()
assert data == b'456789', data
assert f.sendcmd('REST 7').startswith('350')
conn = f.transfercmd(f'RETR {folder}/{name}')
data = conn.makefile('rb').read()
conn.close()
f.voidresp()
assert data == b'789', data

# STOR after REST cuts the file at the offset and continues there; APPE appends.
conn = f.transfercmd(f'STOR {folder}/{name}', rest=5)
conn.sendall(b'abc')
conn.close()
f.voidresp()
assert open(f'{home}/{folder}/{name}', 'rb').read() == b'01234abc'
f.storbinary(f'APPE {folder}/{name}', io.BytesIO(b'XY'))
assert open(f'{home}/{folder}/{name}', 'rb').read() == b'01234abcXY'

# EPSV names only the port.
assert re.fullmatch(r'229 .*\(\|\|\|\d+\|\)', f.sendcmd('EPSV')), 'EPSV reply'
f.voidcmd('NOOP')

# RNFR/RNTO, then errors as 550 replies that keep the connection.
f.rename(f'{folder}/{name}', f'{folder}/renamed.txt')
assert f.nlst(folder) == ['renamed.txt']
def code(command):
    try:
        return f.sendcmd(command)[:3]
    except ftplib.error_perm as error:
        return str(error)[:3]
assert code('DELE missing.txt') == '550'
assert code(f'RMD {folder}') == '550', 'RMD of a folder that is not empty'
assert code(f'MKD {folder}') == '550', 'MKD of an existing folder'
assert code(f'CWD {folder}/renamed.txt') == '550', 'CWD into a file'
assert code('SIZE missing.txt') == '550'
try:
    f.retrbinary('RETR missing.txt', lambda block: None)
    raise AssertionError('RETR of a missing file succeeded')
except ftplib.error_perm as error:
    assert str(error).startswith('550'), error
f.delete(f'{folder}/renamed.txt')
f.rmd(folder)
assert f.nlst() == []
assert f.quit().startswith('221')
print('ok')
"#;

#[test]
fn ftplib_command_sequence() {
    let server = ftp_only().start();
    let output = run_script(&server, server.ftp_port(), COMMANDS, &[]);
    assert_eq!(output.trim(), "ok");
}

const ABORT_UPLOAD: &str = r#"
import ftplib, socket, struct, sys, time
port, password, home = int(sys.argv[1]), sys.argv[2], sys.argv[3]
target = f'{home}/keep.bin'
open(target, 'wb').write(b'original')

def upload_start():
    f = ftplib.FTP()
    f.connect('127.0.0.1', port, timeout=20)
    f.login('alice', password)
    f.voidcmd('TYPE I')
    conn = f.transfercmd('STOR keep.bin')
    conn.sendall(b'x' * 2_000_000)
    return f, conn

# ABOR while the data connection is still open: 426 for the transfer, 226 for ABOR.
f, conn = upload_start()
f.sock.sendall(b'ABOR\r\n')
replies = {f.getline()[:3], f.getline()[:3]}
assert replies == {'426', '226'}, replies
conn.close()
assert open(target, 'rb').read() == b'original', 'ABOR before closing the data connection'
f.voidcmd('NOOP')
f.quit()

# ftplib's abort() while the data connection is open. It sends ABOR as urgent data, which
# the server reads only up to the urgent mark until more input arrives, so the session is
# not used further.
f, conn = upload_start()
assert f.abort()[:3] in ('426', '226'), 'abort reply'
conn.close()
f.close()
time.sleep(0.3)
assert open(target, 'rb').read() == b'original', 'abort() with the data connection open'

# ftplib's abort() after closing the data connection.
f, conn = upload_start()
conn.close()
assert f.abort()[:3] in ('426', '226'), 'abort reply'
f.close()
time.sleep(0.3)
assert open(target, 'rb').read() == b'original', 'close, then ABOR'

# A reset data connection.
f, conn = upload_start()
conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
conn.close()
try:
    f.voidresp()
    raise AssertionError('a reset upload was reported as stored')
except ftplib.error_temp as error:
    assert str(error).startswith('426'), error
f.quit()
assert open(target, 'rb').read() == b'original', 'reset data connection'

# A complete upload still replaces the file.
f, conn = upload_start()
conn.close()
f.voidresp()
f.quit()
assert open(target, 'rb').read() == b'x' * 2_000_000, 'complete upload'
print('ok')
"#;

#[test]
fn aborted_upload_keeps_old_file() {
    let server = ftp_only().start();
    std::fs::create_dir_all(server.home("alice")).unwrap();
    let output = run_script(&server, server.ftp_port(), ABORT_UPLOAD, &[]);
    assert_eq!(output.trim(), "ok");
    let names: Vec<String> = std::fs::read_dir(server.home("alice"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["keep.bin"], "temporary upload files left behind");
}

const BAD_COMMANDS: &str = r#"
import ftplib, socket, sys
port, password = int(sys.argv[1]), sys.argv[2]
other = ftplib.FTP()
other.connect('127.0.0.1', port, timeout=20)
other.login('alice', password)

# A syntax error gets a 501 reply; the server then closes that connection only.
f = ftplib.FTP()
f.connect('127.0.0.1', port, timeout=20)
f.login('alice', password)
try:
    f.sendcmd('MODE Z')
    raise AssertionError('MODE Z accepted')
except ftplib.error_perm as error:
    assert str(error).startswith('501'), error
# An unknown command gets 500 and keeps the connection.
u = ftplib.FTP()
u.connect('127.0.0.1', port, timeout=20)
u.login('alice', password)
try:
    u.sendcmd('FOOBAR')
    raise AssertionError('FOOBAR accepted')
except ftplib.error_perm as error:
    assert str(error).startswith('500'), error
assert u.pwd() == '/'
u.quit()

# A connection reset in the middle of a session.
r = socket.create_connection(('127.0.0.1', port))
r.recv(100)
r.sendall(b'USER alice\r\n')
r.recv(100)
r.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b'\x01\x00\x00\x00\x00\x00\x00\x00')
r.close()

# Bytes that are not UTF-8.
b = socket.create_connection(('127.0.0.1', port))
b.recv(100)
b.sendall(b'\xff\xfe\xfd\r\n')
b.recv(100)
b.close()

assert other.pwd() == '/'
assert other.nlst() == []
other.quit()
print('ok')
"#;

#[test]
fn bad_input_closes_one_connection() {
    let server = ftp_only().start();
    let output = run_script(&server, server.ftp_port(), BAD_COMMANDS, &[]);
    assert_eq!(output.trim(), "ok");
}

const PASSIVE: &str = r#"
import ftplib, io, re, socket, sys
port, password, home = int(sys.argv[1]), sys.argv[2], sys.argv[3]
low, high, host = int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
f = ftplib.FTP()
f.connect('127.0.0.1', port, timeout=20)
f.login('alice', password)
f.storbinary('STOR p.txt', io.BytesIO(b'passive'))
for _ in range(30):
    reply = f.sendcmd('PASV')
    numbers = re.search(r'\((\d+),(\d+),(\d+),(\d+),(\d+),(\d+)\)', reply).groups()
    announced = '.'.join(numbers[:4])
    data_port = int(numbers[4]) * 256 + int(numbers[5])
    assert announced == host, (reply, host)
    assert low <= data_port <= high, (data_port, low, high)
    # The listener is on the control connection's address, whatever PASV announces.
    conn = socket.create_connection(('127.0.0.1', data_port))
    f.sendcmd('RETR p.txt')
    data = conn.makefile('rb').read()
    conn.close()
    f.voidresp()
    assert data == b'passive', data
    reply = f.sendcmd('EPSV')
    data_port = int(re.search(r'\|\|\|(\d+)\|', reply).group(1))
    assert low <= data_port <= high, (data_port, low, high)
    conn = socket.create_connection(('127.0.0.1', data_port))
    f.sendcmd('RETR p.txt')
    conn.makefile('rb').read()
    conn.close()
    f.voidresp()
f.quit()
print('ok')
"#;

#[test]
fn passive_ports_in_range() {
    let (low, high) = free_port_range(6);
    let server = ftp_only()
        .set(
            "ftpd",
            &format!("passive_port_range = {{ start = {low}, end = {high} }}"),
        )
        .start();
    let extra = [low.to_string(), high.to_string(), "127.0.0.1".to_owned()];
    let output = run_script(&server, server.ftp_port(), PASSIVE, &extra);
    assert_eq!(output.trim(), "ok");
}

#[test]
fn passive_host_announced() {
    let (low, high) = free_port_range(10);
    let server = ftp_only()
        .set(
            "ftpd",
            &format!("passive_port_range = {{ start = {low}, end = {high} }}"),
        )
        .set("ftpd", "passive_host = \"192.0.2.7\"")
        .start();
    let extra = [low.to_string(), high.to_string(), "192.0.2.7".to_owned()];
    let output = run_script(&server, server.ftp_port(), PASSIVE, &extra);
    assert_eq!(output.trim(), "ok");
}

const FTPS: &str = r#"
import ftplib, io, ssl, sys
port, password, home, cafile = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
open(f'{home}/data.bin', 'wb').write(bytes(range(256)) * 4000)

class Resuming(ftplib.FTP_TLS):
    """Opens each protected data connection with the control connection's TLS session."""
    def ntransfercmd(self, cmd, rest=None):
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        if self._prot_p:
            conn = self.context.wrap_socket(conn, server_hostname=self.host, session=self.sock.session)
            self.resumed.append(conn.session_reused)
        return conn, size

for version in (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2):
    context = ssl.create_default_context(cafile=cafile)
    context.minimum_version = version
    context.maximum_version = version

    # Python's plain FTP_TLS starts a new TLS session on every data connection.
    f = ftplib.FTP_TLS(context=context)
    f.connect('localhost', port, timeout=20)
    f.login('alice', password)
    f.prot_p()
    assert f.sock.version() == {'TLSv1_3': 'TLSv1.3', 'TLSv1_2': 'TLSv1.2'}[version.name]
    assert 'data.bin' in f.nlst(), version
    # retrbinary() unwraps the TLS data connection, which fails unless the server sent
    # close_notify before closing it.
    received = io.BytesIO()
    f.retrbinary('RETR data.bin', received.write)
    assert received.getvalue() == bytes(range(256)) * 4000, version
    f.quit()

    # A client that resumes the control connection's session on data connections.
    r = Resuming(context=context)
    r.resumed = []
    r.connect('localhost', port, timeout=20)
    r.login('alice', password)
    r.prot_p()
    assert 'data.bin' in r.nlst()
    received = io.BytesIO()
    r.retrbinary('RETR data.bin', received.write)
    assert received.getvalue() == bytes(range(256)) * 4000
    assert r.resumed == [True, True], (version, r.resumed)
    r.quit()
print('ok')
"#;

#[test]
fn ftps_with_and_without_resumption() {
    let certificate = TestCertificate::new();
    let server = certificate.configure(ftp_only()).start();
    std::fs::create_dir_all(server.home("alice")).unwrap();
    let extra = [certificate.cert.display().to_string()];
    let output = run_script(&server, server.ftp_port(), FTPS, &extra);
    assert_eq!(output.trim(), "ok");
}

const FTPS_UPLOAD: &str = r#"
import ftplib, io, ssl, sys
port, password, home, cafile = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
context = ssl.create_default_context(cafile=cafile)
f = ftplib.FTP_TLS(context=context)
f.connect('localhost', port, timeout=20)
f.login('alice', password)
f.prot_p()
f.voidcmd('TYPE I')
conn = f.transfercmd('STOR up.bin')
conn.sendall(b'z' * 300_000)
# unwrap() sends close_notify and waits for the server's, as storbinary() does.
try:
    conn.unwrap()
    print('unwrap ok')
except ssl.SSLError as error:
    print('unwrap failed', type(error).__name__)
conn.close()
print(f.voidresp()[:3])
assert open(f'{home}/up.bin', 'rb').read() == b'z' * 300_000

# A TLS data stream that ends without close_notify may be cut short, so it is not stored.
conn = f.transfercmd('STOR up.bin')
conn.sendall(b'y' * 300_000)
conn.close()
try:
    f.voidresp()
    raise AssertionError('an upload without close_notify was stored')
except ftplib.error_temp as error:
    assert str(error).startswith('426'), error
assert open(f'{home}/up.bin', 'rb').read() == b'z' * 300_000
f.quit()
"#;

#[test]
fn ftps_upload_stored() {
    let certificate = TestCertificate::new();
    let server = certificate.configure(ftp_only()).start();
    let extra = [certificate.cert.display().to_string()];
    let output = run_script(&server, server.ftp_port(), FTPS_UPLOAD, &extra);
    let lines: Vec<&str> = output.lines().collect();
    assert_eq!(lines.last(), Some(&"226"), "{output}");
    // NOTE: Ferry does not reply to the client's close_notify on an upload with its own,
    // because libunftp drops the data stream without a TLS shutdown. Python's
    // `FTP_TLS.storbinary`, which waits for that reply, therefore reports an error after
    // the file was stored.
    assert_eq!(
        lines.first(),
        Some(&"unwrap failed SSLEOFError"),
        "{output}"
    );
}

const TLS_REQUIRED: &str = r#"
import ftplib, io, re, socket, ssl, sys
port, password, home, cafile = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
open(f'{home}/data.txt', 'wb').write(b'secret')

plain = ftplib.FTP()
plain.connect('127.0.0.1', port, timeout=20)
try:
    plain.login('alice', password)
    raise AssertionError('login without TLS accepted')
except ftplib.error_perm as error:
    assert str(error).startswith('534'), error
plain.close()

context = ssl.create_default_context(cafile=cafile)
f = ftplib.FTP_TLS(context=context)
f.connect('localhost', port, timeout=20)
assert 'AUTH TLS' in f.sendcmd('FEAT')
f.login('alice', password)
f.prot_c()
try:
    f.sendcmd('PASV')
    raise AssertionError('PASV without PROT P accepted')
except ftplib.error_perm as error:
    assert str(error).startswith('534'), error

# EPSV without PROT P: the data connection opens, the transfer is refused.
reply = f.sendcmd('EPSV')
data_port = int(re.search(r'\|\|\|(\d+)\|', reply).group(1))
conn = socket.create_connection(('127.0.0.1', data_port))
try:
    f.sendcmd('RETR data.txt')
    f.voidresp()
    raise AssertionError('a download without TLS on the data connection succeeded')
except ftplib.error_perm as error:
    assert str(error).startswith('550'), error
conn.close()

f.prot_p()
received = io.BytesIO()
f.retrbinary('RETR data.txt', received.write)
assert received.getvalue() == b'secret'
assert f.nlst() == ['data.txt']
f.quit()
print('ok')
"#;

#[test]
fn tls_required_on_control_and_data() {
    let certificate = TestCertificate::new();
    let server = start_tls_required(&certificate);
    std::fs::create_dir_all(server.home("alice")).unwrap();
    let extra = [certificate.cert.display().to_string()];
    let output = run_script(&server, server.ftp_port(), TLS_REQUIRED, &extra);
    assert_eq!(output.trim(), "ok");
}

#[test]
fn idle_timeout_after_login() {
    let server = ftp_only()
        .set("ftpd", "idle_timeout = 2")
        .set("ftpd", "login_timeout = 2")
        .start();
    let mut control = logged_in_control(server.ftp_port());
    let started = std::time::Instant::now();
    let mut line = String::new();
    control.read_line(&mut line).unwrap();
    // NOTE: libunftp announces the idle timeout with 221; RFC 959 reserves 221 for the
    // reply to QUIT and uses 421 for a close that the server starts.
    assert!(line.starts_with("221 "), "{line:?}");
    let waited = started.elapsed();
    assert!(
        waited >= std::time::Duration::from_millis(1900),
        "{waited:?}"
    );
    line.clear();
    assert_eq!(
        control.read_line(&mut line).unwrap(),
        0,
        "connection left open"
    );
}

#[test]
fn shutdown_closes_open_sessions() {
    // The harness gives open connections 5 seconds after SIGTERM.
    let mut server = ftp_only().start();
    let mut control = logged_in_control(server.ftp_port());
    let started = std::time::Instant::now();
    assert!(server.stop(), "ferry did not exit cleanly");
    let waited = started.elapsed();
    assert!(waited < std::time::Duration::from_secs(20), "{waited:?}");
    let mut rest = String::new();
    let _ = control.read_to_string(&mut rest);
    assert!(rest.starts_with("421 "), "{rest:?}");
}

const READ_ONLY: &str = r#"
import ftplib, io, sys
port, home = int(sys.argv[1]), sys.argv[3]
f = ftplib.FTP()
f.connect('127.0.0.1', port, timeout=20)
f.login('reader', 'readerpw')
received = io.BytesIO()
f.retrbinary('RETR public.txt', received.write)
assert received.getvalue() == b'read me'
assert f.nlst() == ['public.txt']
for command in ['STOR new.txt', 'APPE public.txt']:
    try:
        f.storbinary(command, io.BytesIO(b'x'))
        raise AssertionError(command + ' allowed')
    except ftplib.error_perm as error:
        assert str(error).startswith('550'), (command, error)
for command in ['DELE public.txt', 'MKD folder', 'RNFR public.txt']:
    try:
        f.sendcmd(command)
        if command.startswith('RNFR'):
            f.sendcmd('RNTO moved.txt')
        raise AssertionError(command + ' allowed')
    except ftplib.error_perm as error:
        assert str(error).startswith('550'), (command, error)
assert open(f'{home}/public.txt', 'rb').read() == b'read me'
f.quit()
print('ok')
"#;

#[test]
fn permissions_deny_writes() {
    let server = ftp_only()
        .user(&format!(
            "username = \"reader\"\npassword = \"{}\"\nhome_dir = \"home/reader\"\n\
             permissions = {{ \"/\" = [\"list\", \"download\"] }}",
            password_hash("readerpw")
        ))
        .start();
    let home = server.home("reader");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(home.join("public.txt"), "read me").unwrap();
    let args = [
        server.ftp_port().to_string(),
        String::new(),
        home.display().to_string(),
    ];
    let output = python(READ_ONLY, &args);
    assert_success(&output, "python ftplib script");
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "ok");
    let names: Vec<String> = std::fs::read_dir(&home)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["public.txt"]);
}
