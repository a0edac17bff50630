#pragma once

// PostgreSQL failover for the tests: a private primary with a streaming standby that a test may
// stop, kill and promote, and a listener that accepts TCP and never answers (a hung host).

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <string>

namespace streamlock::test {

// One postmaster, a direct child of the test process (run as postgres when root) so that it dies
// with the test (its backends follow when they notice the postmaster is gone).
class PgServerProcess {
 public:
  PgServerProcess(std::string dataDir, std::string socketDir, std::string logPath);
  ~PgServerProcess();  // SIGKILL
  PgServerProcess(const PgServerProcess&) = delete;
  PgServerProcess& operator=(const PgServerProcess&) = delete;

  // Starts on a free port (retried on races) and waits until it accepts connections.
  void start();
  void stopFast();  // SIGINT (fast shutdown) and reap; at most 30 s, then SIGKILL
  void kill();      // SIGKILL and reap
  int port() const noexcept { return port_; }
  bool running() const noexcept { return pid_ > 0; }

 private:
  bool startOn(int port);
  std::string dataDir_, socketDir_, logPath_;
  int port_ = 0;
  pid_t pid_ = -1;
};

// A primary (initdb, trust auth) and a standby made with pg_basebackup -R -X stream -c fast, both
// on 127.0.0.1, data in a scratch directory removed on destruction. Takes 3-5 s on 2 cores.
class PgStandbyPair {
 public:
  PgStandbyPair();
  ~PgStandbyPair();
  PgStandbyPair(const PgStandbyPair&) = delete;
  PgStandbyPair& operator=(const PgStandbyPair&) = delete;

  int primaryPort() const noexcept { return primary_->port(); }
  int standbyPort() const noexcept { return standby_->port(); }
  // "host=127.0.0.1 port=P dbname=postgres user=postgres"
  std::string primaryConninfo() const;
  std::string standbyConninfo() const;
  // "host=127.0.0.1,127.0.0.1 port=P,S dbname=postgres user=postgres target_session_attrs=read-write"
  std::string failoverConninfo() const;

  void stopPrimary();  // fast shutdown
  void killPrimary();  // SIGKILL
  // pg_ctl promote -w on the standby; returns once it accepts writes.
  void promoteStandby();

 private:
  std::string dir_;
  std::string bindir_;
  std::unique_ptr<PgServerProcess> primary_;
  std::unique_ptr<PgServerProcess> standby_;
};

}  // namespace streamlock::test
