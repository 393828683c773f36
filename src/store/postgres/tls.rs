//! TLS to the PostgreSQL server, for a database on another host: `sslmode=require` in the connection URL, with
//! `sslrootcert=FILE` naming the PEM certificate of the CA that signed the server's certificate. The server's
//! certificate is verified against that CA and the host name in the URL (stricter than libpq's `require`, which
//! encrypts without checking whom it talks to); without `sslrootcert` the URL is refused. Without `sslmode=require`
//! the connection is plain, as before.
//!
//! tokio-postgres speaks TLS through a connector it is handed; this one is tokio-rustls, with the same ring provider
//! the mailer's TLS uses.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};

use super::Error;

/// The URL's own `sslrootcert` (tokio-postgres does not know it) taken out: the URL left, and the file.
pub(super) fn split_root_cert(url: &str) -> (String, Option<String>) {
    const KEY: &str = "sslrootcert=";
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let Some((base, query)) = url.split_once('?') else { return (url.to_owned(), None) };
        let (mut kept, mut file) = (Vec::new(), None);
        for pair in query.split('&') {
            match pair.strip_prefix(KEY) {
                Some(value) => file = Some(value.to_owned()),
                None => kept.push(pair),
            }
        }
        let url =
            if kept.is_empty() { base.to_owned() } else { format!("{base}?{}", kept.join("&")) };
        return (url, file);
    }
    let (mut kept, mut file) = (Vec::new(), None);
    for pair in url.split_whitespace() {
        match pair.strip_prefix(KEY) {
            Some(value) => file = Some(value.to_owned()),
            None => kept.push(pair),
        }
    }
    (kept.join(" "), file)
}

/// A connector that verifies the server against the CA in `root_cert`.
pub(super) fn connector(root_cert: &str) -> Result<Rustls, Error> {
    let pem = std::fs::read(root_cert).map_err(|e| {
        Error::Config(format!("store.url: sslrootcert {root_cert} cannot be read: {e}"))
    })?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| {
            Error::Config(format!(
                "store.url: sslrootcert {root_cert} is not PEM certificates: {e}"
            ))
        })?;
        roots.add(cert).map_err(|e| {
            Error::Config(format!(
                "store.url: sslrootcert {root_cert} holds a certificate rustls refuses: {e}"
            ))
        })?;
    }
    if roots.is_empty() {
        return Err(Error::Config(format!(
            "store.url: sslrootcert {root_cert} holds no certificate"
        )));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Rustls(Arc::new(config)))
}

/// Makes a TLS connection for each new connection of the pool.
#[derive(Clone)]
pub(super) struct Rustls(Arc<rustls::ClientConfig>);

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> MakeTlsConnect<S> for Rustls {
    type Stream = Stream<S>;
    type TlsConnect = Connect;
    type Error = rustls::pki_types::InvalidDnsNameError;

    fn make_tls_connect(&mut self, host: &str) -> Result<Connect, Self::Error> {
        Ok(Connect { config: self.0.clone(), name: ServerName::try_from(host.to_owned())? })
    }
}

/// One connection's handshake, with the name its certificate must carry.
pub(super) struct Connect {
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> TlsConnect<S> for Connect {
    type Stream = Stream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Stream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let connector = tokio_rustls::TlsConnector::from(self.config);
            Ok(Stream(connector.connect(self.name, stream).await?))
        })
    }
}

/// An encrypted connection to the server.
pub(super) struct Stream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> tokio_postgres::tls::TlsStream for Stream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Stream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Stream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
