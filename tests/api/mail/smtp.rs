//! The tests' own SMTP server: mailin-embedded on a loopback port, with STARTTLS, implicit TLS and AUTH, recording every message it accepts.

use super::*;

/// A message the SMTP server accepted.
#[derive(Debug, Clone)]
pub(super) struct Received {
    pub(super) from: String,
    pub(super) to: Vec<String>,
    /// Who logged in on the connection that carried it.
    pub(super) user: Option<String>,
    pub(super) raw: Vec<u8>,
}

/// What the server does and what it got, shared by every connection.
#[derive(Default)]
pub(super) struct Mailbox {
    pub(super) accepted: Vec<Received>,
    /// Answers to give to RCPT TO, and at the end of DATA, before accepting again (`451 ...`, then `250`).
    pub(super) rcpt_answers: VecDeque<(u16, &'static str)>,
    pub(super) data_answers: VecDeque<(u16, &'static str)>,
    /// When set, every RCPT TO is refused with this answer.
    pub(super) refuse_rcpt: Option<(u16, &'static str)>,
    /// Messages the client sent to the end, whatever the answer.
    pub(super) data_attempts: usize,
}

/// The mailin handler: one clone per connection, holding that connection's transaction.
#[derive(Clone)]
pub(super) struct Recorder {
    pub(super) mailbox: Arc<Mutex<Mailbox>>,
    pub(super) user: Option<String>,
    pub(super) from: String,
    pub(super) to: Vec<String>,
    pub(super) data: Vec<u8>,
}

impl Recorder {
    pub(super) fn login(&mut self, user: &str, password: &str) -> Response {
        if user == USER && password == PASSWORD {
            self.user = Some(user.to_owned());
            AUTH_OK
        } else {
            INVALID_CREDENTIALS
        }
    }
}

impl Handler for Recorder {
    fn rcpt(&mut self, _to: &str) -> Response {
        let mut mailbox = self.mailbox.lock().unwrap();
        match mailbox.rcpt_answers.pop_front().or(mailbox.refuse_rcpt) {
            Some((code, text)) => Response::custom(code, text.to_owned()),
            None => OK,
        }
    }

    fn data_start(&mut self, _domain: &str, from: &str, _is8bit: bool, to: &[String]) -> Response {
        self.from = from.to_owned();
        self.to = to.to_vec();
        self.data.clear();
        OK
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.data.extend_from_slice(buf);
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        let mut mailbox = self.mailbox.lock().unwrap();
        mailbox.data_attempts += 1;
        if let Some((code, text)) = mailbox.data_answers.pop_front() {
            return Response::custom(code, text.to_owned());
        }
        let received = Received {
            from: self.from.clone(),
            to: self.to.clone(),
            user: self.user.clone(),
            raw: std::mem::take(&mut self.data),
        };
        mailbox.accepted.push(received);
        OK
    }

    fn auth_plain(
        &mut self,
        _authorization_id: &str,
        authentication_id: &str,
        password: &str,
    ) -> Response {
        self.login(authentication_id, password)
    }

    fn auth_login(&mut self, username: &str, password: &str) -> Response {
        self.login(username, password)
    }
}

impl Pki {
    pub(super) fn server_ssl(&self) -> SslConfig {
        let path = |name: &str| self.dir.path().join(name).display().to_string();
        SslConfig::Trusted {
            cert_path: path("server.pem"),
            key_path: path("server-key.pem"),
            chain_path: path("ca.pem"),
        }
    }
}

/// A running mailin-embedded server and what it has received.
pub(super) struct SmtpServer {
    pub(super) port: u16,
    pub(super) mailbox: Arc<Mutex<Mailbox>>,
}

impl SmtpServer {
    /// Plain SMTP (no STARTTLS, hence no AUTH) on a fresh port.
    pub(super) fn plain() -> SmtpServer {
        SmtpServer::start(TcpListener::bind("127.0.0.1:0").unwrap(), None)
    }

    /// STARTTLS with the test PKI; AUTH PLAIN and LOGIN are offered (after STARTTLS only) and required.
    pub(super) fn starttls(pki: &Pki) -> SmtpServer {
        SmtpServer::start(TcpListener::bind("127.0.0.1:0").unwrap(), Some(pki))
    }

    /// Starts on a port chosen earlier with [`free_port`]: a server that was down comes up.
    pub(super) fn plain_on(port: u16) -> SmtpServer {
        SmtpServer::start(
            TcpListener::bind(("127.0.0.1", port)).expect("the reserved port is still free"),
            None,
        )
    }

    pub(super) fn start(listener: TcpListener, pki: Option<&Pki>) -> SmtpServer {
        let port = listener.local_addr().unwrap().port();
        let mailbox = Arc::new(Mutex::new(Mailbox::default()));
        let handler = Recorder {
            mailbox: mailbox.clone(),
            user: None,
            from: String::new(),
            to: Vec::new(),
            data: Vec::new(),
        };
        let mut server = Server::new(handler);
        server.with_name("smtp.test").with_tcp_listener(listener);
        if let Some(pki) = pki {
            server.with_ssl(pki.server_ssl()).expect("the test certificate loads");
            server.with_auth(AuthMechanism::Plain).with_auth(AuthMechanism::Login);
        }
        std::thread::Builder::new()
            .name(format!("smtp-{port}"))
            .spawn(move || {
                // It serves until the test process ends; an error here would show as a test waiting in vain for mail.
                if let Err(err) = server.serve() {
                    eprintln!("smtp test server on port {port} stopped: {err}");
                }
            })
            .unwrap();
        SmtpServer { port, mailbox }
    }

    pub(super) fn accepted(&self) -> Vec<Received> {
        self.mailbox.lock().unwrap().accepted.clone()
    }

    pub(super) fn data_attempts(&self) -> usize {
        self.mailbox.lock().unwrap().data_attempts
    }

    pub(super) fn answer_rcpt_with(&self, answers: &[(u16, &'static str)]) {
        self.mailbox.lock().unwrap().rcpt_answers.extend(answers.iter().copied());
    }

    pub(super) fn answer_data_with(&self, answers: &[(u16, &'static str)]) {
        self.mailbox.lock().unwrap().data_answers.extend(answers.iter().copied());
    }

    pub(super) fn refuse_rcpt(&self, answer: Option<(u16, &'static str)>) {
        self.mailbox.lock().unwrap().refuse_rcpt = answer;
    }

    /// Waits until the server has accepted `count` messages, and returns them.
    pub(super) async fn wait_for(&self, count: usize) -> Vec<Received> {
        eventually(&format!("{count} message(s) on port {}", self.port), || async {
            let accepted = self.accepted();
            (accepted.len() >= count).then_some(accepted)
        })
        .await
    }
}

/// A loopback port nobody listens on (until a test starts a server there): connections to it are refused.
pub(super) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
