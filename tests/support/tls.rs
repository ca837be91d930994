//! A TLS server on 127.0.0.1:0 with a self-signed certificate (rcgen), and
//! the client TLS settings that do not trust it: a real TLS failure, on
//! loopback. The server counts the connections it accepted (one per
//! attempt: a failed handshake leaves nothing to reuse).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};

/// The name the certificate is made out to (and that the clients resolve
/// to the server with an injected resolver).
pub const TLS_HOST: &str = "tls.test";

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

pub struct TlsServer {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TlsServer {
    /// Serves `HTTP/1.1 200` to any client that completes the handshake
    /// (none of the clients here does).
    pub async fn start() -> TlsServer {
        let key = rcgen::generate_simple_self_signed(vec![TLS_HOST.to_string()]).unwrap();
        let cert = CertificateDer::from(key.cert.der().to_vec());
        let private =
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.signing_key.serialize_der()));
        let config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert], private)
            .unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let acceptor = acceptor.clone();
                connections.spawn(async move {
                    if let Ok(mut tls) = acceptor.accept(stream).await {
                        let _ = tls
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                            .await;
                        let _ = tls.shutdown().await;
                    }
                });
            }
        });
        TlsServer {
            addr,
            accepted,
            task,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://tls.test:<port><path>`: resolve [`TLS_HOST`] to
    /// [`addr`](Self::addr).
    pub fn url(&self, path: &str) -> String {
        format!("https://{TLS_HOST}:{}{path}", self.addr.port())
    }

    /// TCP connections accepted so far (one per attempt).
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// A rustls client configuration that trusts no certificate authority, so
/// the server's self-signed certificate fails with `UnknownIssuer`.
pub fn untrusting_client() -> ClientConfig {
    ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth()
}
