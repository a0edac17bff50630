#include "tls_certs.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <system_error>

#include "env.h"
#include "subprocess.h"

namespace streamlock::test {

namespace {

using namespace std::chrono_literals;

void openssl(std::vector<std::string> args) {
  args.insert(args.begin(), "openssl");
  const ProcessResult result = runProcess(args, 30s);
  if (result.exitCode != 0) {
    std::string command;
    for (const auto& arg : args) command += (command.empty() ? "" : " ") + arg;
    throw std::runtime_error("TlsCertificates: `" + command + "` failed" +
                             (result.timedOut ? " (timed out)" : "") + ": " + result.output);
  }
}

void writeFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::trunc);
  out << text;
  if (!out.flush()) throw std::runtime_error("TlsCertificates: cannot write " + path);
}

// Only what `openssl req` needs, so that the system's openssl.cnf adds no extensions of its own.
constexpr const char* kRequestConfig =
    "[ req ]\n"
    "distinguished_name = dn\n"
    "prompt = no\n"
    "[ dn ]\n"
    "CN = unused\n"
    "[ ca ]\n"
    "basicConstraints = critical, CA:TRUE\n"
    "keyUsage = critical, keyCertSign, cRLSign\n"
    "subjectKeyIdentifier = hash\n";

std::vector<std::string> newKey() {
  return {"-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-noenc"};
}

}  // namespace

TlsCertificates::TlsCertificates() {
  std::string pattern = (std::filesystem::temp_directory_path() / "streamlock-tls-XXXXXX").string();
  if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("TlsCertificates: mkdtemp failed");
  dir_ = pattern;
  try {
    writeFile(dir_ + "/req.cnf", kRequestConfig);
    ca_ = makeCa("ca", "/CN=streamlock test CA");
    otherCa_ = makeCa("other-ca", "/CN=streamlock unrelated test CA");
    server_ = issue("localhost", "DNS:localhost, IP:127.0.0.1, IP:::1", "serverAuth, clientAuth");
    otherName_ = issue("wrong-name.invalid", "DNS:wrong-name.invalid", "serverAuth");
    client_ = issue("streamlock-test-client", "", "clientAuth");
  } catch (...) {
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
    throw;
  }
}

TlsCertificates::~TlsCertificates() {
  std::error_code ignored;
  std::filesystem::remove_all(dir_, ignored);
}

CertAndKey TlsCertificates::makeCa(const std::string& name, const std::string& subject) const {
  CertAndKey out{dir_ + "/" + name + ".crt", dir_ + "/" + name + ".key"};
  std::vector<std::string> args{"req", "-x509", "-config", dir_ + "/req.cnf", "-extensions", "ca"};
  for (auto& arg : newKey()) args.push_back(arg);
  for (auto arg : {"-keyout", out.keyFile.c_str(), "-out", out.certFile.c_str(), "-days", "2", "-subj", subject.c_str()}) {
    args.emplace_back(arg);
  }
  openssl(args);
  return out;
}

CertAndKey TlsCertificates::issue(const std::string& name, const std::string& sans,
                                  const std::string& extendedKeyUsage) const {
  const std::string stem = dir_ + "/" + name;
  CertAndKey out{stem + ".crt", stem + ".key"};
  std::string extensions =
      "basicConstraints = critical, CA:FALSE\n"
      "keyUsage = critical, digitalSignature\n"
      "extendedKeyUsage = " + extendedKeyUsage + "\n"
      "subjectKeyIdentifier = hash\n"
      "authorityKeyIdentifier = keyid\n";
  if (!sans.empty()) extensions += "subjectAltName = " + sans + "\n";
  writeFile(stem + ".ext", extensions);

  std::vector<std::string> request{"req", "-new", "-config", dir_ + "/req.cnf"};
  for (auto& arg : newKey()) request.push_back(arg);
  for (const auto& arg : {std::string("-keyout"), out.keyFile, std::string("-out"), stem + ".csr",
                          std::string("-subj"), "/CN=" + name}) {
    request.push_back(arg);
  }
  openssl(request);
  openssl({"x509", "-req", "-in", stem + ".csr", "-CA", ca_.certFile, "-CAkey", ca_.keyFile, "-set_serial",
           "0x" + uniqueId(), "-days", "2", "-extfile", stem + ".ext", "-out", out.certFile});
  return out;
}

RedisTls TlsCertificates::redisTls(bool authClients) const { return redisTls(server_, authClients); }

RedisTls TlsCertificates::redisTls(const CertAndKey& served, bool authClients) const {
  RedisTls tls;
  tls.certFile = served.certFile;
  tls.keyFile = served.keyFile;
  tls.caFile = ca_.certFile;
  tls.authClients = authClients;
  tls.clientCertFile = client_.certFile;
  tls.clientKeyFile = client_.keyFile;
  return tls;
}

const TlsCertificates& testCertificates() {
  static const TlsCertificates certificates;
  return certificates;
}

}  // namespace streamlock::test
