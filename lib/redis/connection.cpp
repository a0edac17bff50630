#include "redis/connection.h"

#include <sys/epoll.h>

#include <algorithm>
#include <utility>

namespace streamlock::detail {

RedisConnection::RedisConnection(Loop& loop, RedisServerSettings settings)
    : loop_(loop), settings_(std::move(settings)), name_(settings_.host + ":" + std::to_string(settings_.port)) {}

RedisConnection::~RedisConnection() {
  *alive_ = false;
  state_ = State::Closed;
  requests_.clear();
  updateGauges();
  loop_.cancel(connectTimer_);
  if (stream_) loop_.unwatch(stream_->fd());
}

RedisConnection::RequestId RedisConnection::send(std::string_view resp, std::size_t replies, Handler handler) {
  return send([resp](std::string& out) { out.append(resp); }, replies, std::move(handler), {});
}

RedisConnection::RequestId RedisConnection::send(const std::function<void(std::string&)>& encode,
                                                 std::size_t replies, Handler handler, MgetSink sink) {
  // A connection the server closed while it was idle (a restart, CLIENT KILL, an idle timeout) is
  // replaced before anything is queued on it, since nothing that was sent on it could be retried
  // safely: a command sent on it might or might not have run.
  if (state_ == State::Open && requests_.empty() && stream_->peerClosed()) {
    close(Error(ErrorCode::ConnectionLost, "Redis at " + name_ + " closed the idle connection"));
  }
  const RequestId id = nextId_++;
  const std::size_t before = out_.size();
  encode(out_);
  queued_ += out_.size() - before;
  requests_.push_back(Request{id, replies, std::move(handler), queued_, {}, std::move(sink)});
  if (state_ == State::Closed) {
    connect();
  } else if (state_ == State::Open) {
    scheduleFlush();
  }
  updateGauges();
  return id;
}

void RedisConnection::abandon(RequestId id) noexcept {
  for (auto& request : requests_) {
    if (request.id == id) {
      request.handler = nullptr;
      return;
    }
  }
}

void RedisConnection::connect() {
  state_ = State::Connecting;
  reader_ = std::make_unique<ReplyReader>();
  nextAddress_ = 0;
  lastConnectError_ = "no address";
  std::weak_ptr<bool> alive = alive_;
  connectTimer_ = loop_.at(saturatingAdd(Clock::now(), settings_.connectTimeout), [this, alive] {
    if (alive.expired()) return;
    connectTimer_ = 0;
    // What was still under way says more than the last address's failure (or "no address").
    std::string stage = lastConnectError_;
    if (stream_) {
      stage = (stream_->handshaking() ? "the TLS handshake with " : "the TCP connect to ") + stream_->peer() +
              " did not finish";
    }
    Error error(ErrorCode::Timeout, "connecting to Redis at " + name_ + " timed out (" + stage + ")");
    if (stream_ && stream_->handshaking()) logHandshakeFailure(error.what(), false);
    close(error);
  });
  try {
    addresses_ = resolve(settings_.host, settings_.port);
  } catch (const Error& e) {
    // Never fail inside send(): the failure is reported from the loop, like any other.
    loop_.cancel(connectTimer_);
    Error error = e;
    connectTimer_ = loop_.at(Clock::now(), [this, alive, error] {
      if (alive.expired()) return;
      connectTimer_ = 0;
      close(error);
    });
    return;
  }
  tryNextAddress();
}

void RedisConnection::tryNextAddress() {
  while (nextAddress_ < addresses_.size()) {
    const Address& address = addresses_[nextAddress_++];
    try {
      stream_ = Stream::connect(address, settings_.tls, settings_.host);
      interest_ = 0;
      updateInterest();
      return;
    } catch (const Error& e) {
      lastConnectError_ = e.what();
      stream_.reset();
    }
  }
  // Every address failed at once: report it from the loop, never inside send().
  loop_.cancel(connectTimer_);
  std::weak_ptr<bool> alive = alive_;
  connectTimer_ = loop_.at(Clock::now(), [this, alive] {
    if (alive.expired()) return;
    connectTimer_ = 0;
    close(Error(ErrorCode::ConnectFailed, lastConnectError_));
  });
}

void RedisConnection::connected() {
  // AUTH and SELECT go first, ahead of everything queued while connecting.
  std::string setup;
  std::size_t setupCommands = 0;
  if (!settings_.password.empty()) {
    if (settings_.user.empty()) {
      appendCommand(setup, {"AUTH", settings_.password});
    } else {
      appendCommand(setup, {"AUTH", settings_.user, settings_.password});
    }
    ++setupCommands;
  }
  if (settings_.db != 0) {
    appendCommand(setup, {"SELECT", std::to_string(settings_.db)});
    ++setupCommands;
  }
  if (setupCommands > 0) {
    for (auto& request : requests_) request.end += setup.size();
    queued_ += setup.size();
    out_.insert(0, setup);
    std::weak_ptr<bool> alive = alive_;
    requests_.push_front(Request{nextId_++, setupCommands,
                                 [this, alive](RedisOutcome outcome) {
                                   if (alive.expired() || outcome.error) return;
                                   for (const auto& reply : outcome.replies) {
                                     if (!isErrorReply(reply.get())) continue;
                                     close(Error(ErrorCode::ConnectFailed, "Redis at " + name_ +
                                                                               " refused the connection setup: " +
                                                                               std::string(replyText(reply.get()))));
                                     return;
                                   }
                                 },
                                 written_ + setup.size(),
                                 {},
                                 {}});
  }
  state_ = State::Open;
  loop_.cancel(connectTimer_);
  connectTimer_ = 0;
  if (onOpen_) onOpen_();
  flush();
}

void RedisConnection::scheduleFlush() {
  if (flushScheduled_) return;
  flushScheduled_ = true;
  std::weak_ptr<bool> alive = alive_;
  loop_.atEndOfIteration([this, alive] {
    if (alive.expired()) return;
    flushScheduled_ = false;
    if (state_ == State::Open) flush();
  });
}

void RedisConnection::flush() {
  try {
    while (!out_.empty()) {
      const std::size_t n = stream_->write(out_.data(), out_.size());
      if (n == 0) break;
      written_ += n;
      out_.erase(0, n);
    }
    updateInterest();
  } catch (const Error& e) {
    close(e);
  }
}

void RedisConnection::updateInterest() {
  if (!stream_) return;
  const std::uint32_t wants = stream_->wants();
  std::uint32_t events = 0;
  if (wants & Stream::kRead) events |= EPOLLIN;
  if (wants & Stream::kWrite) events |= EPOLLOUT;
  if (state_ == State::Open && !out_.empty()) events |= EPOLLOUT;
  if (events == interest_) return;
  interest_ = events;
  loop_.watch(stream_->fd(), this, events);
}

void RedisConnection::onIo(std::uint32_t events) {
  std::weak_ptr<bool> alive = alive_;
  try {
    if (state_ == State::Connecting) {
      if (!stream_->advance()) {
        updateInterest();
        return;
      }
      connected();
      return;
    }
    if (state_ != State::Open) return;
    // Room to write with nothing to write: a TLS read that had to write first (a TLS 1.3 key
    // update answered into a full send buffer) waits for it; retried here, else the level-triggered
    // EPOLLOUT would fire again and again.
    if ((events & (EPOLLIN | EPOLLHUP | EPOLLERR)) || ((events & EPOLLOUT) && out_.empty())) readReplies();
    if (alive.expired() || state_ != State::Open) return;
    if (!out_.empty()) {
      flush();
    } else {
      updateInterest();
    }
  } catch (const Error& e) {
    if (alive.expired()) return;
    if (state_ == State::Connecting) {
      // This address failed: the next one, within the same connect deadline.
      lastConnectError_ = e.what();
      if (stream_->handshaking()) logHandshakeFailure(lastConnectError_, true);
      loop_.unwatch(stream_->fd());
      stream_.reset();
      tryNextAddress();
      return;
    }
    close(e);
  }
}

// A failed TLS handshake (OpenSSL's reason, or its deadline) is logged for every caller, the
// writer's included, which otherwise only the caller would see. (A refused or timed-out TCP connect
// is not: the read path logs its unknown answers already, and the writer gets the error.)
void RedisConnection::logHandshakeFailure(const std::string& what, bool prefixed) noexcept {
  if (!settings_.logger) return;
  try {
    settings_.logger(LogLevel::Warning, prefixed ? "connecting to Redis at " + name_ + " failed: " + what : what);
  } catch (...) {
    // A logger that throws must not take the loop down.
  }
}

void RedisConnection::armReader() noexcept {
  const MgetSink::Slice slice = requests_.empty() ? MgetSink::Slice{}
                                                  : requests_.front().sink.slice(requests_.front().got.size());
  reader_->expectMget(slice.owners, slice.count);
}

void RedisConnection::readReplies() {
  in_.clear();
  const bool more = stream_->read(in_);
  std::weak_ptr<bool> alive = alive_;
  // Fed in slices, each parsed before the next is fed, so that hiredis' buffer stays small.
  constexpr std::size_t kSlice = 16384;
  for (std::size_t fed = 0; fed < in_.size();) {
    const std::size_t slice = std::min(kSlice, in_.size() - fed);
    reader_->feed(in_.data() + fed, slice);
    fed += slice;
    for (;;) {
      armReader();
      Reply reply = reader_->next();
      if (!reply) break;
      if (requests_.empty()) {
        if (!onPush_) throw Error(ErrorCode::ConnectionLost, "Redis at " + name_ + " sent an unexpected reply");
        onPush_(std::move(reply));
        if (alive.expired() || state_ != State::Open) return;
        continue;
      }
      Request& front = requests_.front();
      front.got.push_back(std::move(reply));
      if (front.got.size() < front.replies) continue;
      Request done = std::move(requests_.front());
      requests_.pop_front();
      updateGauges();
      if (done.handler) done.handler(RedisOutcome{std::move(done.got), std::nullopt, true});
      if (alive.expired() || state_ != State::Open) return;  // a handler closed or destroyed it
    }
  }
  if (!more) throw Error(ErrorCode::ConnectionLost, "Redis at " + name_ + " closed the connection");
}

void RedisConnection::close(const Error& error) {
  if (stream_) {
    loop_.unwatch(stream_->fd());
    stream_.reset();
  }
  loop_.cancel(connectTimer_);
  connectTimer_ = 0;
  interest_ = 0;
  state_ = State::Closed;
  reader_.reset();
  // Unsent bytes are dropped: the next connection's positions start where this one's writing ended.
  const std::uint64_t written = written_;
  out_.clear();
  queued_ = written_;
  std::weak_ptr<bool> alive = alive_;
  failAll(error, written);
  if (!alive.expired() && onClose_) onClose_(error);
}

void RedisConnection::failAll(const Error& error, std::uint64_t written) {
  std::deque<Request> failed;
  failed.swap(requests_);
  updateGauges();
  std::weak_ptr<bool> alive = alive_;
  for (auto& request : failed) {
    if (!request.handler) continue;
    request.handler(RedisOutcome{{}, error, written >= request.end});
    if (alive.expired()) return;
  }
}

void RedisConnection::updateGauges() noexcept {
  if (!settings_.gauges) return;
  const bool open = state_ != State::Closed;
  const bool busy = open && !requests_.empty();
  if (open != countedOpen_) {
    countedOpen_ = open;
    if (open) {
      ++settings_.gauges->open;
    } else {
      --settings_.gauges->open;
    }
  }
  if (busy != countedBusy_) {
    countedBusy_ = busy;
    if (busy) {
      ++settings_.gauges->busy;
    } else {
      --settings_.gauges->busy;
    }
  }
}

void RedisConnection::closeSilently() noexcept {
  *alive_ = false;
  if (stream_) stream_->closeSilently();
  stream_.reset();
  requests_.clear();
  out_.clear();
  state_ = State::Closed;
}

}  // namespace streamlock::detail
