#pragma once

// One libpq connection driven by the library's Loop: a non-blocking connect (host by host for a
// multi-host conninfo), then pipeline mode with one Sync per statement. Loop thread only.

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <list>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "io/clock.h"
#include "io/loop.h"
#include "streamlock/completion.h"
#include "streamlock/error.h"
#include "streamlock/log.h"
#include "streamlock/options.h"
#include "streamlock/postgres.h"

struct pg_conn;  // libpq's PGconn

namespace streamlock::detail {

class PgConnection;

// The conninfo split into one set of libpq keywords per host, plus what the pool remembers about
// each host: a host whose attempt timed out is tried last until demotedUntil.
class PgTargets {
 public:
  using Keywords = std::vector<std::pair<std::string, std::string>>;
  // Until when each host is tried last; shared by the pools of one Client (same hosts, same loop
  // thread), so that a host one of them found hung is tried last by the others too.
  using Demotions = std::vector<Deadline>;

  // Parses options.conninfo (keyword/value string or URI) and adds options.settings to libpq's
  // "options" keyword; connect_timeout is dropped (the caller enforces its own deadlines). Throws
  // Error(InvalidArgument) for a conninfo that does not parse or whose host, hostaddr and port
  // lists do not match, without echoing a password.
  explicit PgTargets(const PostgresOptions& options, std::shared_ptr<Demotions> shared = nullptr);

  std::size_t size() const noexcept { return hosts_.size(); }
  const Keywords& keywords(std::size_t host) const noexcept { return hosts_[host].keywords; }
  // target_session_attrs=prefer-standby: libpq looks for a standby among all the hosts first and
  // accepts any host only when none is one. A connect then makes two passes over the hosts: the
  // first with keywords() (which ask for "standby"), the second with these (which ask for "any").
  bool preferStandby() const noexcept { return preferStandby_; }
  const Keywords& fallbackKeywords(std::size_t host) const noexcept { return hosts_[host].fallback; }
  // "host:port" for messages (never a password); empty parts are libpq's defaults.
  const std::string& label(std::size_t host) const noexcept { return hosts_[host].label; }

  // Host indexes in the order to try at `now`: those not demoted in conninfo order, then the
  // demoted ones in conninfo order.
  std::vector<std::size_t> order(Deadline now) const;
  void demote(std::size_t host, Deadline until) noexcept { (*demoted_)[host] = until; }

 private:
  struct Host {
    Keywords keywords;
    Keywords fallback;  // prefer-standby's second pass
    std::string label;
  };
  std::vector<Host> hosts_;
  std::shared_ptr<Demotions> demoted_;
  bool preferStandby_ = false;
};

// The outcome of a statement, delivered on the loop thread.
using PgDone = std::function<void(Result<PgResult>)>;

// Bounds of one statement (see PgPoolCore::execute).
struct StatementLimits {
  // Latest time to get a connection; past it a statement still waiting fails with PoolExhausted
  // (one whose own connect is under way waits for that connect instead).
  Deadline acquireBy = Deadline::max();
  // The statement's own deadline, counted from when it is sent; on expiry: Timeout, and its
  // connection is closed.
  Milliseconds timeout{5000};
  // Hard bound of the whole call (pool wait, connect, statement, a retry): Timeout.
  Deadline notAfter = Deadline::max();
};

// One call: what the connection sends, and the pool's bookkeeping of it.
struct PgStatement {
  std::string sql;
  PgParams params;
  StatementLimits limits;
  PgDone done;

  enum class State { Waiting, InFlight, Done };
  State state = State::Waiting;
  Deadline enqueuedAt{};
  Milliseconds acquireWindow{0};         // acquireBy - enqueuedAt, for a statement queued again
  PgConnection* claim = nullptr;   // the connect this waiting statement started
  PgConnection* connection = nullptr;  // where it is in flight
  Deadline sentAt{};
  bool reusedConnection = false;  // sent on a connection that had completed statements before
  bool retried = false;           // already sent once more after a lost connection
  bool requeued = false;          // already queued again after a timeout ahead of it
  bool staleRetried = false;      // already sent once more after its prepared statement went stale
  Loop::TimerId timer = 0;
  bool queued = false;  // in the pool's waiting list, at waitPos
  std::list<std::shared_ptr<PgStatement>>::iterator waitPos{};
};

// A statement that ended on a connection: its outcome.
struct PgFinished {
  std::shared_ptr<PgStatement> statement;
  Result<PgResult> outcome;
  // It failed executing a statement prepared earlier, in a way that a fresh Prepare can mend:
  // gone from the session (26000, e.g. a caller's DEALLOCATE ALL) or planned for an older table
  // (0A000, "cached plan must not change result type" after an ALTER TABLE). Nothing ran.
  bool stalePrepared = false;
};

// A statement still in flight on a connection that died, with the error it would fail with.
struct PgOrphan {
  std::shared_ptr<PgStatement> statement;
  Error error;
};

struct PgConnectionConfig {
  Milliseconds connectTimeout{2000};
  Milliseconds hostAttemptTimeout{500};
  Milliseconds demoteFor{30000};  // how long a host whose attempt timed out is tried last
  bool prepareStatements = true;
  // client_connection_check_interval set right after connecting on servers >= 14 (0: not set),
  // so that the server aborts a statement soon after the library closed its connection.
  Milliseconds connectionCheckInterval{1000};
};

class PgConnection final : public IoHandler {
 public:
  // Told of what happens to a connection. Each call is the connection's last action in the
  // current event: the owner may close() it inside, but must free it only later (outside the
  // connection's own stack).
  class Owner {
   public:
    virtual void connectionReady(PgConnection& connection) = 0;
    virtual void connectFailed(PgConnection& connection, Error error) = 0;
    // Statements that ended; when lost is set the connection died (and is closed already), and
    // orphans are the statements that were still in flight on it, in order.
    virtual void connectionProgress(PgConnection& connection, std::vector<PgFinished> finished,
                                    std::optional<Error> lost, std::vector<PgOrphan> orphans) = 0;

   protected:
    ~Owner() = default;
  };

  PgConnection(Loop& loop, Owner& owner, PgTargets& targets, const PgConnectionConfig& config, const Logger& logger);
  ~PgConnection();  // close()
  PgConnection(const PgConnection&) = delete;
  PgConnection& operator=(const PgConnection&) = delete;

  // Starts connecting: the hosts in targets.order(), one attempt at a time, all of them bounded by
  // connectTimeout. The outcome comes through Owner, never inside this call.
  void connect();

  // Connected (pipeline mode entered) and not lost or closed.
  bool ready() const noexcept { return state_ == State::Ready; }
  bool connecting() const noexcept { return state_ == State::Connecting; }
  // User statements in flight (sent, results not all read).
  std::size_t inFlight() const noexcept { return userInFlight_; }
  // When the oldest user statement in flight was sent; nullopt when none is.
  std::optional<Deadline> oldestSentAt() const noexcept;
  // Prepares sql again the next time it is sent (its cached prepared statement went stale).
  void forgetPrepared(const std::string& sql) noexcept;
  // The oldest user statement in flight (the one the server runs or answers), or null.
  std::shared_ptr<PgStatement> oldestStatement() const noexcept;
  // User statements this connection completed (with any outcome).
  std::uint64_t completed() const noexcept { return completed_; }
  int backendPid() const noexcept;
  // The index (in PgTargets) of the host this connection connected to, or tries now.
  std::size_t host() const noexcept { return host_; }

  // Ready connections only. Queues the statement in the pipeline (prepare when new, execute, sync)
  // and flushes what the socket takes. False when the connection turned out broken: it is then
  // lost (closed), and close() gives every statement in flight back, this one included.
  bool send(const std::shared_ptr<PgStatement>& statement);
  // Why send() failed.
  const std::optional<Error>& lostError() const noexcept { return lostError_; }

  // Stops watching the socket and PQfinishes the connection (libpq sends Terminate); returns the
  // user statements that were in flight, in order. No Owner call follows. Idempotent.
  std::vector<std::shared_ptr<PgStatement>> close();

  // fork() child: frees the connection without writing to the parent's socket (a /dev/null
  // descriptor is dup2()ed onto it first, so PQfinish's Terminate goes nowhere) and without
  // touching the loop (whose epoll set the child shares with the parent). The statements are
  // dropped uncalled.
  void abandonAfterFork() noexcept;

  // The statement that this connect is for (see PgPoolCore), or nullptr.
  PgStatement* claimant = nullptr;

  void onIo(std::uint32_t events) override;

 private:
  enum class State { Idle, Connecting, Ready, Closed };
  enum class Phase { Prepare, Execute, Sync };
  struct Prepared {
    std::string name;
    enum class Status { Pending, Ready, Failed } status = Status::Pending;
    std::optional<Error> error;  // why the prepare failed
  };
  struct Entry {
    std::shared_ptr<PgStatement> statement;  // null for the library's own session setup
    Phase phase = Phase::Execute;
    std::shared_ptr<Prepared> uses;  // the prepared statement it executes (prepareStatements)
    bool prepares = false;           // it carries the Prepare of `uses`
    std::optional<Error> error;
    bool stalePrepared = false;  // see PgFinished
    PgResult result;
    bool haveResult = false;
    Deadline sentAt{};
  };

  // Connecting.
  void startAttempt();
  // Starts libpq's connect with these keywords; false (the error noted) when it failed at once.
  bool launch(const PgTargets::Keywords& keywords);
  void armAttemptTimer();
  void attemptFailed(const std::string& why, bool timedOut);
  void pollConnect();
  void watchConnect(int status);
  void connected();
  void finishConnect(Error error);

  // Connected.
  bool flush();
  void setWatch(bool write);
  void drain(std::vector<PgFinished>& finished);
  void take(Entry& entry, struct pg_result* raw);
  void complete(Entry& entry, std::vector<PgFinished>& finished);
  void lose(const std::string& why, std::vector<PgFinished> finished);

  void unwatch() noexcept;
  void cancelTimer() noexcept;
  void log(LogLevel level, const std::string& message) const noexcept;

  Loop& loop_;
  Owner& owner_;
  PgTargets& targets_;
  const PgConnectionConfig& config_;
  const Logger& logger_;

  State state_ = State::Idle;
  pg_conn* conn_ = nullptr;
  int watchedFd_ = -1;
  std::uint32_t watchedEvents_ = 0;
  Loop::TimerId timer_ = 0;

  // Connecting: the hosts still to try, the current one, the deadlines, the errors so far.
  std::vector<std::size_t> hostsLeft_;
  std::size_t host_ = 0;
  bool fallbackPass_ = false;  // prefer-standby's second pass (any host) is under way
  bool fallbackLeft_ = false;  // prefer-standby's second pass is still to come
  Deadline connectDeadline_{};
  Deadline attemptDeadline_{};
  std::string connectErrors_;
  bool attemptTimedOut_ = false;  // the last failed attempt ran out of time

  // Connected.
  std::deque<Entry> entries_;
  std::size_t userInFlight_ = 0;
  std::uint64_t completed_ = 0;
  static constexpr std::size_t kMaxPrepared = 256;  // SQL texts prepared per connection, at most
  std::unordered_map<std::string, std::shared_ptr<Prepared>> prepared_;  // SQL text -> statement
  std::uint64_t nextName_ = 0;
  bool writeBlocked_ = false;  // PQflush left data unsent
  std::optional<Error> lostError_;
};

// libpq's messages end with a newline and may span lines; logs want one line.
std::string pgOneLine(const char* message);

}  // namespace streamlock::detail
