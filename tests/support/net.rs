//! Transport faults the fault server cannot script, as real parts: injected
//! DNS resolvers (one that fails, one that sends a name to a fixed address),
//! a listener whose accept queue is full (connects to it never complete:
//! a real connect timeout), and the two clients built with those settings,
//! TLS, a connect timeout and a client-side timeout (reqwest's `timeout()`,
//! tower's `TimeoutLayer` between the retry layer and hyper-util's client).

use std::future::Ready;
use std::io;
use std::net::SocketAddr;
use std::task::{Context, Poll};
use std::time::Duration;

use http_resilience::{EndpointPolicies, RetryLayer, RetryMiddleware};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::TokioExecutor;
use tokio::net::{TcpListener, TcpSocket};
use tower::util::BoxCloneSyncService;
use tower::{Layer, ServiceExt};

use super::clients::{Client, ReplayBody, TowerService, Via};
use super::tls;

/// How a client resolves host names.
#[derive(Clone, Copy, Debug)]
pub enum Dns {
    /// The system's resolver (only used for IP literals here).
    System,
    /// Every lookup fails, as a lookup of `no-such-host.invalid` does.
    Fail,
    /// Every name resolves to this address (the URL's port is kept, as
    /// both clients do with a resolver's answer).
    To(SocketAddr),
}

impl Dns {
    fn lookup(self) -> Result<Vec<SocketAddr>, io::Error> {
        match self {
            Dns::System => unreachable!("the system resolver is not injected"),
            // What getaddrinfo's failure looks like: an io::Error of a kind
            // no classifier can read anything into.
            Dns::Fail => Err(io::Error::other(
                "failed to lookup address information: Name or service not known",
            )),
            Dns::To(addr) => Ok(vec![addr]),
        }
    }
}

/// hyper-util's resolver seam.
impl tower::Service<Name> for Dns {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = io::Error;
    type Future = Ready<Result<Self::Response, io::Error>>;
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, _name: Name) -> Self::Future {
        std::future::ready(self.lookup().map(Vec::into_iter))
    }
}

/// reqwest's resolver seam.
impl reqwest::dns::Resolve for Dns {
    fn resolve(&self, _name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let result = self.lookup();
        Box::pin(async move {
            let addrs = result?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// How the client under the retry layer is set up.
#[derive(Clone, Copy, Debug)]
pub struct Stack {
    pub dns: Dns,
    /// The client's connect timeout (reqwest `connect_timeout`,
    /// hyper-util `HttpConnector::set_connect_timeout`).
    pub connect_timeout: Option<Duration>,
    /// A timeout around each attempt below the retry layer: reqwest's
    /// `timeout()`, tower's `TimeoutLayer`.
    pub timeout: Option<Duration>,
    /// `https` with rustls, trusting no certificate authority in the tower
    /// column (hyper-rustls) and reqwest's default roots in the reqwest
    /// column: a self-signed certificate fails either way.
    pub tls: bool,
}

impl Stack {
    pub const PLAIN: Stack = Stack {
        dns: Dns::System,
        connect_timeout: None,
        timeout: None,
        tls: false,
    };
}

/// A client through `via`, under `policy`, over a client set up as `stack`.
pub fn client(via: Via, policy: impl Into<EndpointPolicies>, stack: Stack) -> Client {
    let policy = policy.into();
    match via {
        Via::Reqwest => {
            let mut builder = reqwest::Client::builder().no_proxy();
            if !matches!(stack.dns, Dns::System) {
                builder = builder.dns_resolver(stack.dns);
            }
            if let Some(after) = stack.connect_timeout {
                builder = builder.connect_timeout(after);
            }
            if let Some(after) = stack.timeout {
                builder = builder.timeout(after);
            }
            Client::Reqwest(
                reqwest_middleware::ClientBuilder::new(builder.build().unwrap())
                    .with(RetryMiddleware::new(policy))
                    .build(),
            )
        }
        Via::Tower => {
            let service = match stack.dns {
                Dns::System => tower_service(HttpConnector::new(), stack),
                dns => tower_service(HttpConnector::new_with_resolver(dns), stack),
            };
            Client::Custom(RetryLayer::new(policy).layer(service))
        }
    }
}

fn tower_service<R>(mut http: HttpConnector<R>, stack: Stack) -> TowerService
where
    R: tower::Service<Name> + Clone + Send + Sync + 'static,
    R::Response: Iterator<Item = SocketAddr>,
    R::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    R::Future: Send,
{
    http.set_connect_timeout(stack.connect_timeout);
    let builder = HyperClient::builder(TokioExecutor::new());
    let client = if stack.tls {
        http.enforce_http(false);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls::untrusting_client())
            .https_only()
            .enable_http1()
            .wrap_connector(http);
        BoxCloneSyncService::new(builder.build::<_, ReplayBody>(https).map_err(Into::into))
    } else {
        BoxCloneSyncService::new(builder.build::<_, ReplayBody>(http).map_err(Into::into))
    };
    match stack.timeout {
        Some(after) => {
            BoxCloneSyncService::new(tower::timeout::TimeoutLayer::new(after).layer(client))
        }
        None => client,
    }
}

/// A listener that accepts nothing and whose accept queue is full: a
/// connection to it never completes (the kernel drops its SYNs), so only a
/// connect timeout ends it. Keep the value alive while it is used.
pub struct Stalled {
    addr: SocketAddr,
    _listener: TcpListener,
    _queued: std::net::TcpStream,
}

impl Stalled {
    pub fn new() -> Stalled {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        // Backlog 0: one connection fills the queue.
        let listener = socket.listen(0).unwrap();
        let addr = listener.local_addr().unwrap();
        let queued = std::net::TcpStream::connect(addr).unwrap();
        Stalled {
            addr,
            _listener: listener,
            _queued: queued,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}
