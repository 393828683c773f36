//! TLS to a relay whose own certificate is trusted by name (`email.smtp.pin_certificate`): Exchange's default SMTP
//! certificate is self-signed, so no CA vouches for it and `ca_file` cannot help (a self-signed certificate is a CA
//! certificate used as an end entity, which a normal check refuses).
//!
//! The relay must present exactly the pinned certificate, byte for byte: nothing else is accepted, whoever signed
//! it. The name in it is not compared with `email.smtp.host`, since the certificate itself is what is trusted
//! (Exchange's carries the server's short name); the handshake's signature is still verified, so only the holder of
//! that certificate's key can answer.
//!
//! lettre offers no way to hand it a certificate verifier, so this module makes the TLS connection itself with
//! tokio-rustls and gives lettre the encrypted stream. With STARTTLS it speaks the few plain-text lines before the
//! upgrade (greeting, EHLO, STARTTLS) and then lets lettre begin again over TLS, as if greeted there.

use std::fmt;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use lettre::transport::smtp::client::AsyncTokioStream;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// Accepts exactly one end-entity certificate.
#[derive(Debug)]
struct PinnedCertificate {
    pinned: CertificateDer<'static>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.pinned.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the relay's certificate is not the one email.smtp.pin_certificate names".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// The TLS settings for a pinned relay, read from the PEM file `path` (its first certificate is the pinned one).
#[derive(Clone)]
pub(super) struct PinnedRelay {
    config: Arc<rustls::ClientConfig>,
}

impl fmt::Debug for PinnedRelay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PinnedRelay")
    }
}

impl PinnedRelay {
    pub(super) fn read(path: &Path) -> Result<PinnedRelay, String> {
        let pem =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let pinned = CertificateDer::from_pem_slice(&pem)
            .map_err(|e| format!("{} holds no PEM certificate ({e})", path.display()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("cannot set up TLS ({e})"))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedCertificate { pinned, provider }))
            .with_no_client_auth();
        Ok(PinnedRelay { config: Arc::new(config) })
    }

    /// Implicit TLS: the handshake on a fresh connection, then SMTP from its greeting.
    pub(super) async fn wrap(&self, host: &str, tcp: TcpStream) -> io::Result<PinnedStream> {
        let tls = self.handshake(host, tcp).await?;
        Ok(PinnedStream { replay: Vec::new(), tls })
    }

    /// STARTTLS: reads the greeting, says EHLO and STARTTLS in plain text, then the handshake. The stream starts
    /// with the greeting again, so that lettre's connection, which expects one, reads it and says EHLO over TLS.
    pub(super) async fn starttls(
        &self,
        host: &str,
        hello: &str,
        tcp: TcpStream,
    ) -> io::Result<PinnedStream> {
        let mut plain = BufReader::new(tcp);
        let greeting = reply(&mut plain).await?;
        expect(&greeting, "220", "the greeting")?;
        plain.get_mut().write_all(format!("EHLO {hello}\r\n").as_bytes()).await?;
        let ehlo = reply(&mut plain).await?;
        expect(&ehlo, "250", "EHLO")?;
        if !ehlo.lines().any(|line| {
            line.get(4..).is_some_and(|word| word.trim().eq_ignore_ascii_case("STARTTLS"))
        }) {
            return Err(io::Error::other("the server does not offer STARTTLS"));
        }
        plain.get_mut().write_all(b"STARTTLS\r\n").await?;
        expect(&reply(&mut plain).await?, "220", "STARTTLS")?;
        if !plain.buffer().is_empty() {
            return Err(io::Error::other("the server sent data before the TLS handshake"));
        }
        let tls = self.handshake(host, plain.into_inner()).await?;
        Ok(PinnedStream { replay: greeting.into_bytes(), tls })
    }

    async fn handshake(&self, host: &str, tcp: TcpStream) -> io::Result<TlsStream<TcpStream>> {
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| io::Error::other(format!("{host:?} is not a server name ({e})")))?;
        tokio_rustls::TlsConnector::from(self.config.clone()).connect(name, tcp).await
    }
}

/// One SMTP reply, all its lines (`250-...` up to `250 ...`), as the server sent them.
async fn reply(plain: &mut BufReader<TcpStream>) -> io::Result<String> {
    let mut text = String::new();
    loop {
        let mut line = String::new();
        if plain.read_line(&mut line).await? == 0 {
            return Err(io::Error::other("the server closed the connection"));
        }
        let last = line.as_bytes().get(3) != Some(&b'-');
        text.push_str(&line);
        if last || text.len() > 64 * 1024 {
            return Ok(text);
        }
    }
}

fn expect(reply: &str, code: &str, step: &str) -> io::Result<()> {
    if reply.starts_with(code) {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "{step}: {}",
            reply.lines().next().unwrap_or_default().trim()
        )))
    }
}

/// The encrypted connection lettre speaks SMTP over; `replay` is read before anything from the server.
pub(super) struct PinnedStream {
    replay: Vec<u8>,
    tls: TlsStream<TcpStream>,
}

impl fmt::Debug for PinnedStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PinnedStream")
    }
}

impl AsyncRead for PinnedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.replay.is_empty() {
            let n = self.replay.len().min(buf.remaining());
            buf.put_slice(&self.replay[..n]);
            self.replay.drain(..n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.tls).poll_read(cx, buf)
    }
}

impl AsyncWrite for PinnedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tls).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tls).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tls).poll_shutdown(cx)
    }
}

impl AsyncTokioStream for PinnedStream {
    fn peer_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.tls.get_ref().0.peer_addr()
    }
}
