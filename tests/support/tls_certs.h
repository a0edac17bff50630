#pragma once

// Certificates for TLS tests, made at run time by the openssl command-line tool (EC P-256 keys,
// valid for two days) in a fresh temporary directory that the destructor removes.

#include <string>
#include <vector>

#include "redis_server.h"

namespace streamlock::test {

// A certificate file and its unencrypted private key (PEM).
struct CertAndKey {
  std::string certFile;
  std::string keyFile;
};

class TlsCertificates {
 public:
  // Makes a CA, a second unrelated CA, and the server, other-name and client certificates below.
  // Throws std::runtime_error with openssl's output when a command fails.
  TlsCertificates();
  ~TlsCertificates();  // removes the directory
  TlsCertificates(const TlsCertificates&) = delete;
  TlsCertificates& operator=(const TlsCertificates&) = delete;

  const std::string& dir() const noexcept { return dir_; }

  // The test CA that signed server, otherName and client (PEM, self-signed).
  const std::string& caFile() const noexcept { return ca_.certFile; }
  // A second CA that signed nothing here: trusting it alone must fail verification.
  const std::string& otherCaFile() const noexcept { return otherCa_.certFile; }
  // The server certificate, CN and SANs DNS:localhost, IP:127.0.0.1, IP:::1 (serverAuth, clientAuth).
  const CertAndKey& server() const noexcept { return server_; }
  // A server certificate signed by the CA for DNS:wrong-name.invalid only: valid, but matches
  // neither localhost nor 127.0.0.1 nor ::1.
  const CertAndKey& otherName() const noexcept { return otherName_; }
  // A client certificate (CN streamlock-test-client, clientAuth) signed by the CA.
  const CertAndKey& client() const noexcept { return client_; }

  // Issues one more certificate signed by the CA into dir(): name is its CN and file stem, sans
  // an OpenSSL subjectAltName list ("DNS:a.example, IP:10.0.0.1"; empty: none), extendedKeyUsage
  // e.g. "serverAuth" or "clientAuth".
  CertAndKey issue(const std::string& name, const std::string& sans, const std::string& extendedKeyUsage) const;

  // A TLS-only redis-server serving `served` (default: server()), trusting caFile() for client
  // certificates; with authClients, clients must present one (the readiness check uses client()).
  RedisTls redisTls(bool authClients = false) const;
  RedisTls redisTls(const CertAndKey& served, bool authClients = false) const;

 private:
  CertAndKey makeCa(const std::string& name, const std::string& subject) const;
  std::string dir_;
  CertAndKey ca_, otherCa_, server_, otherName_, client_;
};

// One set for the whole test process, made on first use (certificates cost ~0.1 s to make).
const TlsCertificates& testCertificates();

}  // namespace streamlock::test
