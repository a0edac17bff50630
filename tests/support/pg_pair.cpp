#include "pg_pair.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <thread>
#include <stdexcept>
#include <vector>

#include "env.h"
#include "pg.h"
#include "process.h"

namespace streamlock::test {

namespace {

std::string bindir() { return requireEnv("STREAMLOCK_TEST_PG_BINDIR"); }

std::string conninfoOn(int port) {
  return "host=127.0.0.1 port=" + std::to_string(port) + " dbname=postgres user=postgres";
}

bool accepting(int port) {
  return PQping((conninfoOn(port) + " connect_timeout=2").c_str()) == PQPING_OK;
}

}  // namespace

// ---- PgServerProcess ----

PgServerProcess::PgServerProcess(std::string dataDir, std::string socketDir, std::string logPath)
    : dataDir_(std::move(dataDir)), socketDir_(std::move(socketDir)), logPath_(std::move(logPath)) {}

PgServerProcess::~PgServerProcess() { kill(); }

void PgServerProcess::start() {
  if (pid_ > 0) throw std::runtime_error("PgServerProcess: already running");
  // Restart on the same port when there is one (clients keep their conninfo); else a free one.
  if (port_ != 0) {
    if (!startOn(port_)) throw std::runtime_error("PgServerProcess: could not restart on port " + std::to_string(port_));
    return;
  }
  for (int attempt = 0; attempt < 5; ++attempt) {
    if (startOn(closedPort())) return;
  }
  throw std::runtime_error("PgServerProcess: postgres did not start on " + dataDir_ + "; see " + logPath_);
}

bool PgServerProcess::startOn(int port) {
  pid_ = spawnChild({bindir() + "/postgres", "-D", dataDir_, "-p", std::to_string(port), "-c",
                     "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=" + socketDir_, "-c", "fsync=off",
                     "-c", "synchronous_commit=off", "-c", "max_connections=60"},
                    {true, logPath_});
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < deadline) {
    if (exitedStatus(pid_)) {  // the port was taken, or the data directory is bad
      pid_ = -1;
      return false;
    }
    if (accepting(port)) {
      port_ = port;
      return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  kill();
  return false;
}

void PgServerProcess::stopFast() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGINT);
  if (!waitExit(pid_, std::chrono::seconds(30))) killAndReap(pid_);
  pid_ = -1;
}

void PgServerProcess::kill() {
  killAndReap(pid_);
  pid_ = -1;
}

// ---- PgStandbyPair ----

PgStandbyPair::PgStandbyPair() : dir_(makeScratchDir("pgpair")), bindir_(bindir()) {
  if (const auto user = postgresUserWhenRoot()) {
    if (::chown(dir_.c_str(), user->uid, user->gid) != 0) throw std::runtime_error("cannot chown " + dir_);
  }
  const SpawnOptions asPostgres{true, dir_ + "/setup.log"};
  runCommand({bindir_ + "/initdb", "-D", dir_ + "/primary", "-U", "postgres", "--auth=trust", "--encoding=UTF8",
              "--locale=C", "--no-sync"},
             std::chrono::seconds(120), asPostgres);
  primary_ = std::make_unique<PgServerProcess>(dir_ + "/primary", dir_, dir_ + "/primary.log");
  primary_->start();
  // initdb's pg_hba.conf trusts replication from 127.0.0.1; wal_level is replica by default.
  runCommand({bindir_ + "/pg_basebackup", "-h", "127.0.0.1", "-p", std::to_string(primary_->port()), "-U",
              "postgres", "-D", dir_ + "/standby", "-R", "-X", "stream", "-c", "fast", "--no-sync", "--no-manifest"},
             std::chrono::seconds(120), asPostgres);
  standby_ = std::make_unique<PgServerProcess>(dir_ + "/standby", dir_, dir_ + "/standby.log");
  standby_->start();
  TestDb primary(primaryConninfo());
  if (!waitUntil([&] {
        return primary.number("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'") == 1;
      }, std::chrono::seconds(30), std::chrono::milliseconds(20))) {
    throw std::runtime_error("PgStandbyPair: the standby does not stream; see " + dir_);
  }
}

PgStandbyPair::~PgStandbyPair() {
  standby_.reset();
  primary_.reset();
  std::error_code ignored;
  std::filesystem::remove_all(dir_, ignored);
}

std::string PgStandbyPair::primaryConninfo() const { return conninfoOn(primary_->port()); }

std::string PgStandbyPair::standbyConninfo() const { return conninfoOn(standby_->port()); }

std::string PgStandbyPair::failoverConninfo() const {
  return "host=127.0.0.1,127.0.0.1 port=" + std::to_string(primary_->port()) + "," + std::to_string(standby_->port()) +
         " dbname=postgres user=postgres target_session_attrs=read-write";
}

void PgStandbyPair::stopPrimary() { primary_->stopFast(); }

void PgStandbyPair::killPrimary() { primary_->kill(); }

void PgStandbyPair::promoteStandby() {
  runCommand({bindir_ + "/pg_ctl", "promote", "-D", dir_ + "/standby", "-w", "-t", "30"}, std::chrono::seconds(60),
             {true, dir_ + "/promote.log"});
}

}  // namespace streamlock::test
