#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "io/clock.h"
#include "io/loop.h"
#include "io/stream.h"
#include "redis/resp.h"
#include "streamlock/error.h"
#include "streamlock/log.h"

namespace streamlock::detail {

// Gauges of a Client's Redis connections, for Client::metrics(): updated by the I/O thread, read by
// any thread.
struct RedisGauges {
  std::atomic<std::size_t> open{0};  // connections open or being opened
  std::atomic<std::size_t> busy{0};  // of which with commands in flight
};

// Where and how to connect: one Redis server.
struct RedisServerSettings {
  std::string host;
  int port = 6379;
  std::string user;      // empty: AUTH with the password alone
  std::string password;  // empty: no AUTH
  int db = 0;            // SELECT when not 0
  std::shared_ptr<TlsContext> tls;  // null: plaintext
  std::chrono::milliseconds connectTimeout{250};  // TCP, TLS handshake, AUTH and SELECT, all addresses
  std::shared_ptr<RedisGauges> gauges;            // optional
  Logger logger;  // optional: a connect that fails (TCP, TLS handshake, timeout) is logged at warning
};

// What a request got: every reply, or the error that ended the connection first.
struct RedisOutcome {
  std::vector<Reply> replies;  // one per command, in order (error replies included) when !error
  std::optional<Error> error;  // Timeout / ConnectFailed / ConnectionLost
  bool written = false;        // all of the request's bytes reached the socket (it may have run)
};

// Where the replies of a lookup's MGETs go as they are parsed (ReplyReader::expectMget): the i-th
// reply of the request covers (*owners)[i * chunk ...], at most chunk values. The request keeps
// owners alive, abandoned or not, until its last reply is read.
struct MgetSink {
  std::shared_ptr<std::vector<std::string>> owners;
  std::size_t chunk = 0;

  // The owners the reply-th MGET answers: where they start, and how many (0 past the last chunk).
  struct Slice {
    std::string* owners = nullptr;
    std::size_t count = 0;
  };
  Slice slice(std::size_t reply) const noexcept {
    const std::size_t begin = reply * chunk;
    if (!owners || begin >= owners->size()) return {};
    return {owners->data() + begin, std::min(chunk, owners->size() - begin)};
  }
};

// One connection to one Redis server, shared by every caller of a Client and pipelined: requests
// are queued in order, written together at the end of the loop iteration, and their replies are
// matched in order. A request whose caller gave up (its deadline passed) is abandoned, not
// cancelled: its bytes stay in order on the wire and its late replies are dropped, so that the
// commands queued after it (e.g. an acquire's cleanup) still run after it. Only an I/O or protocol
// error closes the connection; the next request opens a new one.
//
// Loop thread only.
class RedisConnection final : public IoHandler {
 public:
  using Handler = std::function<void(RedisOutcome)>;
  using RequestId = std::uint64_t;

  RedisConnection(Loop& loop, RedisServerSettings settings);
  ~RedisConnection();
  RedisConnection(const RedisConnection&) = delete;
  RedisConnection& operator=(const RedisConnection&) = delete;

  // Queues resp (`replies` commands, already encoded) and connects first if needed. handler runs
  // once, on the loop thread, never inside this call, unless the request is abandoned.
  RequestId send(std::string_view resp, std::size_t replies, Handler handler);
  // The same, with the commands appended by encode straight to the bytes queued (a lookup's MGETs
  // are large: no copy), and the MGET replies read into sink.owners when sink.owners is set.
  RequestId send(const std::function<void(std::string&)>& encode, std::size_t replies, Handler handler,
                 MgetSink sink);
  // The handler of id will not run; its replies are dropped when they come.
  void abandon(RequestId id) noexcept;

  // Called each time a new connection has opened (before the queued requests are written), so
  // that the owner can queue what must come first.
  void onOpen(std::function<void()> hook) { onOpen_ = std::move(hook); }
  // Told each time the connection closes on an error (EOF, I/O or protocol error, a failed connect),
  // after the requests in flight failed: Sentinel drops a master whose connection closed, so that
  // the next command asks the sentinels again instead of reconnecting to the cached address.
  void onClose(std::function<void(const Error&)> hook) { onClose_ = std::move(hook); }
  // Receives the replies that answer no request: the messages of a SUBSCRIBE (sentinel's
  // +switch-master). Without it such a reply is a protocol error.
  void onPush(std::function<void(Reply)> handler) { onPush_ = std::move(handler); }

  bool isOpen() const noexcept { return state_ == State::Open; }
  std::size_t inFlight() const noexcept { return requests_.size(); }
  const std::string& name() const noexcept { return name_; }

  // Closes the connection and fails every request with error (never inside a handler's caller).
  void close(const Error& error);
  // fork() child: forgets everything without sending a byte.
  void closeSilently() noexcept;

  void onIo(std::uint32_t events) override;

 private:
  enum class State { Closed, Connecting, Open };
  struct Request {
    RequestId id;
    std::size_t replies;
    Handler handler;  // empty once abandoned
    std::uint64_t end;  // position of its last byte in the stream of everything queued
    std::vector<Reply> got;
    MgetSink sink;
  };

  void connect();
  void tryNextAddress();
  void connected();
  void flush();
  void scheduleFlush();
  void readReplies();
  // Tells the reader where the next reply goes when it answers an MGET of a lookup.
  void logHandshakeFailure(const std::string& what, bool prefixed) noexcept;
  void armReader() noexcept;
  void updateInterest();
  void failAll(const Error& error, std::uint64_t written);
  // Keeps the gauges in step with state_ and requests_.
  void updateGauges() noexcept;
  bool countedOpen_ = false;
  bool countedBusy_ = false;

  Loop& loop_;
  const RedisServerSettings settings_;
  const std::string name_;  // host:port, for messages
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);  // for tasks queued on the loop

  State state_ = State::Closed;
  std::vector<Address> addresses_;
  std::size_t nextAddress_ = 0;
  std::string lastConnectError_;
  Loop::TimerId connectTimer_ = 0;
  std::unique_ptr<Stream> stream_;
  std::uint32_t interest_ = 0;
  std::unique_ptr<ReplyReader> reader_;

  std::string out_;              // queued bytes not yet written
  std::uint64_t queued_ = 0;     // bytes ever queued on this connection
  std::uint64_t written_ = 0;    // of which written
  bool flushScheduled_ = false;
  std::string in_;
  std::deque<Request> requests_;
  RequestId nextId_ = 1;
  std::function<void()> onOpen_;
  std::function<void(Reply)> onPush_;
  std::function<void(const Error&)> onClose_;
};

}  // namespace streamlock::detail
