//! TLS for the agent's own blocking connections: profile uploads to an `https://` server and
//! the Kubernetes API server. rustls on *ring*, over `std::net::TcpStream`.
//!
//! [`TlsTarget`] is what to trust and which name to check; [`connect`] opens a plain or TLS
//! [`Stream`] with timeouts.

use std::{
    fs,
    io::{self, Read, Write},
    net::{TcpStream, ToSocketAddrs},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use rustls::{
    pki_types::{pem::PemObject, CertificateDer, ServerName},
    ClientConfig, ClientConnection, RootCertStore, StreamOwned,
};

/// System CA bundles, in the order they are tried when `SSL_CERT_FILE` is not set: Debian,
/// Ubuntu and Alpine (the `ca-certificates` package), then Fedora and RHEL.
pub const SYSTEM_CA_FILES: [&str; 2] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
];

/// Why a TLS client could not be configured.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("no usable certificate in {}: {why}", path.display())]
    Certificate { path: PathBuf, why: String },
    #[error(
        "no CA bundle found (tried SSL_CERT_FILE and {}): install ca-certificates or name one",
        SYSTEM_CA_FILES.join(", ")
    )]
    NoSystemBundle,
    #[error("`{host}` is not a host name or IP address")]
    ServerName { host: String },
}

/// What a TLS connection trusts and the name the server's certificate must carry.
#[derive(Clone, Debug)]
pub struct TlsTarget {
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
}

impl TlsTarget {
    /// Trusts the PEM certificates of `ca_file` (every one of them is a root), or the system's
    /// bundle ([`system_ca_file`]) when `None`.
    pub fn new(ca_file: Option<&Path>, host: &str) -> Result<TlsTarget, TlsError> {
        let (path, pem) = read_ca_bundle(ca_file)?;
        TlsTarget::with_ca_pem(&pem, &path, host)
    }

    fn with_ca_pem(pem: &[u8], source: &Path, host: &str) -> Result<TlsTarget, TlsError> {
        let certificate_error = |why: String| TlsError::Certificate {
            path: source.to_path_buf(),
            why,
        };
        let mut roots = RootCertStore::empty();
        for certificate in CertificateDer::pem_slice_iter(pem) {
            let certificate = certificate.map_err(|error| certificate_error(error.to_string()))?;
            // System bundles may hold certificates rustls cannot use: skip those, as OpenSSL
            // does; a bundle with none usable is an error below.
            let _ = roots.add(certificate);
        }
        if roots.is_empty() {
            return Err(certificate_error(
                "no PEM certificate rustls accepts".to_string(),
            ));
        }
        let config = ClientConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .map_err(|error| certificate_error(error.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let server_name =
            ServerName::try_from(host.to_string()).map_err(|_| TlsError::ServerName {
                host: host.to_string(),
            })?;
        Ok(TlsTarget {
            config: Arc::new(config),
            server_name,
        })
    }
}

/// The system's CA bundle: `SSL_CERT_FILE`, else the first of [`SYSTEM_CA_FILES`] that exists.
pub fn system_ca_file() -> Result<PathBuf, TlsError> {
    std::env::var_os("SSL_CERT_FILE")
        .map(PathBuf::from)
        .or_else(|| {
            SYSTEM_CA_FILES
                .iter()
                .map(PathBuf::from)
                .find(|path| path.exists())
        })
        .ok_or(TlsError::NoSystemBundle)
}

/// The PEM certificates of `ca_file`, or of the system's bundle when `None`, and the file they
/// came from.
pub fn read_ca_bundle(ca_file: Option<&Path>) -> Result<(PathBuf, Vec<u8>), TlsError> {
    let path = match ca_file {
        Some(path) => path.to_path_buf(),
        None => system_ca_file()?,
    };
    match fs::read(&path) {
        Ok(pem) => Ok((path, pem)),
        Err(source) => Err(TlsError::Read { path, source }),
    }
}

/// rustls on *ring*. rustls 0.23.48 deprecates that provider for lacking post-quantum key
/// exchange; the replacement, aws-lc-rs, needs cmake and minutes of C build on 2 cores.
#[allow(deprecated)]
pub(crate) fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A connection, in the clear or over TLS.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(stream) => stream.read(buf),
            Stream::Tls(stream) => stream.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(stream) => stream.write(buf),
            Stream::Tls(stream) => stream.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(stream) => stream.flush(),
            Stream::Tls(stream) => stream.flush(),
        }
    }
}

/// Connects to `host:port` (the first address it resolves to) within `connect_timeout`, with
/// `io_timeout` on every read and write; over TLS when `tls` is given (the handshake happens on
/// the first read or write).
pub fn connect(
    host: &str,
    port: u16,
    tls: Option<&TlsTarget>,
    connect_timeout: Duration,
    io_timeout: Duration,
) -> io::Result<Stream> {
    let address = (host, port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "the host name has no address"))?;
    let tcp = TcpStream::connect_timeout(&address, connect_timeout)?;
    tcp.set_read_timeout(Some(io_timeout))?;
    tcp.set_write_timeout(Some(io_timeout))?;
    Ok(match tls {
        None => Stream::Plain(tcp),
        Some(target) => {
            let connection =
                ClientConnection::new(target.config.clone(), target.server_name.clone())
                    .map_err(io::Error::other)?;
            Stream::Tls(Box::new(StreamOwned::new(connection, tcp)))
        }
    })
}

/// `host:port` for messages and `Host` headers: IPv6 addresses in brackets.
pub fn authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::{net::TcpListener, thread};

    use rustls::{pki_types::PrivateKeyDer, ServerConfig, ServerConnection};

    use super::*;

    pub const CA: &str = include_str!("metadata/testdata/ca.crt");
    pub const SERVER_CERT: &str = include_str!("metadata/testdata/server.crt");
    pub const SERVER_KEY: &str = include_str!("metadata/testdata/server.key");

    /// The test CA written to a file of its own.
    pub fn ca_file(name: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!(
            "profiler-test-ca-{name}-{}.crt",
            std::process::id()
        ));
        fs::write(&path, CA).expect("write the test CA");
        path
    }

    /// An HTTPS server on 127.0.0.1 with a certificate of the test CA (for `127.0.0.1` and
    /// `localhost`), answering each of `connections` connections with `respond(request)`, the
    /// request being its head and its `Content-Length` body. Returns its port and the requests
    /// it saw.
    pub fn serve(
        connections: usize,
        respond: impl Fn(&str) -> Vec<u8> + Send + 'static,
    ) -> (u16, thread::JoinHandle<Vec<String>>) {
        let certificates: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(SERVER_CERT.as_bytes())
                .collect::<Result<_, _>>()
                .expect("server certificate");
        let key = PrivateKeyDer::from_pem_slice(SERVER_KEY.as_bytes()).expect("server key");
        let config = Arc::new(
            ServerConfig::builder_with_provider(crypto_provider())
                .with_safe_default_protocol_versions()
                .expect("protocol versions")
                .with_no_client_auth()
                .with_single_cert(certificates, key)
                .expect("server config"),
        );
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("local addr").port();
        let handle = thread::spawn(move || {
            let mut requests = Vec::new();
            for _ in 0..connections {
                let (tcp, _) = listener.accept().expect("accept");
                let connection = ServerConnection::new(config.clone()).expect("server connection");
                let mut stream = StreamOwned::new(connection, tcp);
                let mut request = Vec::new();
                let mut byte = [0u8; 1];
                while !request.ends_with(b"\r\n\r\n") {
                    match stream.read(&mut byte) {
                        Ok(1) => request.push(byte[0]),
                        _ => break,
                    }
                }
                let head = String::from_utf8_lossy(&request).into_owned();
                let body_len = head
                    .lines()
                    .find_map(|line| line.strip_prefix("Content-Length: "))
                    .and_then(|len| len.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                let mut body = vec![0u8; body_len];
                let _ = stream.read_exact(&mut body);
                request.extend_from_slice(&body);
                let request = String::from_utf8_lossy(&request).into_owned();
                if !head.is_empty() {
                    let _ = stream.write_all(&respond(&request));
                    stream.conn.send_close_notify();
                    let _ = stream.flush();
                }
                requests.push(request);
            }
            requests
        });
        (port, handle)
    }

    #[test]
    fn system_roots_and_bad_bundles() {
        // The machine's bundle (ca-certificates) loads.
        if SYSTEM_CA_FILES.iter().any(|path| Path::new(path).exists()) {
            TlsTarget::new(None, "example.com").expect("system roots");
        }
        let empty = std::env::temp_dir().join(format!("profiler-empty-ca-{}", std::process::id()));
        fs::write(&empty, "not a certificate\n").expect("write");
        let error = TlsTarget::new(Some(&empty), "x").expect_err("no certificate");
        assert!(
            error.to_string().contains("no usable certificate"),
            "{error}"
        );
        let error = TlsTarget::new(Some(Path::new("/nonexistent.crt")), "x").expect_err("missing");
        assert!(error.to_string().contains("/nonexistent.crt"), "{error}");
        assert_eq!(authority("::1", 443), "[::1]:443");
        assert_eq!(authority("example.com", 80), "example.com:80");
    }
}
