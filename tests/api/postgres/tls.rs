//! A database on another host is reached over TLS: `sslmode=require` with `sslrootcert` naming the CA, the server's
//! certificate verified against it. The test cluster offers TLS with a certificate the test CA signed.

use healthset_responder::store::postgres::{self, Postgres};

use super::cluster::{cluster, connect, database};
use super::column;

/// The database's name, the last part of its URL.
fn name_of(url: &str) -> &str {
    url.rsplit('/').next().unwrap()
}

#[tokio::test]
async fn the_store_reaches_its_database_over_tls_verified_against_the_ca_given() {
    let url = database().await;
    let ca = cluster().ca_file();
    let tls = format!("{url}?sslmode=require&sslrootcert={}", ca.display());
    let pg = Postgres::connect(&tls, 2).await.expect("the store connects over TLS");
    pg.set_paused(Some("checking TLS".into())).await.unwrap();
    assert_eq!(pg.paused().await.unwrap().as_deref(), Some("checking TLS"));
    let db = connect(&url).await;
    let sql = format!(
        "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
         WHERE a.datname = '{}' AND a.application_name = 'healthset-responder'",
        name_of(&url)
    );
    let encrypted: Vec<bool> = column(&db, &sql).await;
    assert!(!encrypted.is_empty(), "the store's connections are listed");
    assert!(
        encrypted.iter().all(|ssl| *ssl),
        "every connection of the store is encrypted: {encrypted:?}"
    );
    assert_eq!(
        postgres::describe_url(&tls).unwrap(),
        format!(
            "postgres@127.0.0.1:{}/{} over TLS, verified against {}",
            cluster().port,
            name_of(&url),
            ca.display()
        )
    );
}

#[tokio::test]
async fn a_server_the_ca_did_not_sign_is_refused_and_tls_without_a_ca_is_refused_before_connecting()
{
    let url = database().await;
    let other = crate::pki::Pki::new();
    let tls = format!("{url}?sslmode=require&sslrootcert={}", other.ca_file().display());
    let err = Postgres::connect(&tls, 1).await.err().expect("an unknown CA is refused");
    let said = err.to_string();
    assert!(matches!(err, postgres::Error::Unavailable { .. }), "{said}");
    assert!(said.contains("certificate"), "the refusal names the certificate: {said}");

    let err = Postgres::connect(&format!("{url}?sslmode=require"), 1).await.err().unwrap();
    assert_eq!(
        err.to_string(),
        "store.url: sslmode=require needs sslrootcert=FILE, the CA certificate (PEM) that signed the server's, so that the server is verified"
    );
    let err =
        Postgres::connect(&format!("{url}?sslrootcert=/nowhere/ca.pem"), 1).await.err().unwrap();
    assert!(err.to_string().starts_with("store.url: sslrootcert is for sslmode=require"), "{err}");
    let err = Postgres::connect(&format!("{url}?sslmode=require&sslrootcert=/nowhere/ca.pem"), 1)
        .await
        .err()
        .unwrap();
    assert!(
        err.to_string().starts_with("store.url: sslrootcert /nowhere/ca.pem cannot be read"),
        "{err}"
    );
}
