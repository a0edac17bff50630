// The public Client: each blocking call is a wait on its completion form, whose completion runs
// directly on the I/O thread (never through the executor, so that a blocking call made on the
// executor's own thread cannot deadlock); each completion form hands its outcome to the executor
// or the callback thread.
#include "client/core.h"
#include "client/waiter.h"

namespace streamlock {
namespace {

using detail::ClientCore;
using detail::LookupAnswer;
using detail::Waiter;

ActiveStreams activeStreams(const std::vector<std::string>& chatIds, LookupAnswer& answer) {
  ActiveStreams out;
  out.status = answer.status;
  for (std::size_t i = 0; i < answer.owners.size(); ++i) {
    if (!answer.owners[i].empty()) out.owners.emplace(chatIds[i], std::move(answer.owners[i]));
  }
  return out;
}

// What a reconciliation answers when it could not even start (out of memory): every marker
// preserved, as with Redis unknown.
ReconcileResult preserved(const std::vector<MarkerCandidate>& candidates) {
  ReconcileResult result;
  result.status = LookupStatus::Unknown;
  for (const auto& candidate : candidates) {
    ReconciledMarker marker;
    marker.chatId = candidate.chatId;
    if (candidate.marker && !candidate.marker->empty()) {
      marker.state = MarkerState::Unknown;
      marker.streamId = candidate.marker;
    }
    result.markers.push_back(std::move(marker));
  }
  return result;
}

// Hands value to done through the core's delivery.
template <typename T>
void deliver(ClientCore& core, Completion<T> done, T value) {
  auto shared = std::make_shared<T>(std::move(value));
  core.complete([done = std::move(done), shared]() { done(std::move(*shared)); });
}

}  // namespace

Client::Client(Options options) : core_(std::make_shared<ClientCore>(std::move(options))) {}

Client::~Client() {
  // On the I/O thread (a callable that the library dropped there, e.g. an ownership-lost callback,
  // owned the Client; or a completion run there by an inline executor destroyed it): the loop
  // cannot stop, join or free itself inside its own iteration. The shutdown runs there, and the
  // loop thread lets go of the core once it has left its loop.
  if (core_->onIoThread()) {
    core_->releaseOnLoopThread(std::move(core_));
    return;
  }
  core_->shutdown();
}

// --- Reader ------------------------------------------------------------------------------------------

ActiveStreams Client::getActiveChatStreamIds(const std::vector<std::string>& chatIds) noexcept {
  try {
    std::vector<const std::string*> ids;
    ids.reserve(chatIds.size());
    for (const auto& id : chatIds) ids.push_back(&id);
    auto waiter = Waiter<LookupAnswer>::make();
    core_->lookup(std::move(ids), [waiter](LookupAnswer answer) { waiter->set(std::move(answer)); });
    LookupAnswer answer = waiter->wait();
    return activeStreams(chatIds, answer);
  } catch (const std::exception& e) {
    core_->log(LogLevel::Error, "lock lookup failed unexpectedly: {}", e.what());
    return ActiveStreams{LookupStatus::Unknown, {}};
  }
}

void Client::getActiveChatStreamIds(std::vector<std::string> chatIds, Completion<ActiveStreams> done) noexcept {
  ClientCore* core = core_.get();
  try {
    auto ids = std::make_shared<std::vector<std::string>>(std::move(chatIds));
    std::vector<const std::string*> pointers;
    pointers.reserve(ids->size());
    for (const auto& id : *ids) pointers.push_back(&id);
    core->lookup(std::move(pointers), [core, ids, done](LookupAnswer answer) mutable {
      deliver(*core, std::move(done), activeStreams(*ids, answer));
    });
  } catch (const std::exception& e) {
    core->log(LogLevel::Error, "lock lookup failed unexpectedly: {}", e.what());
    deliver(*core, std::move(done), ActiveStreams{LookupStatus::Unknown, {}});
  }
}

ReconcileResult Client::reconcileChatStreamMarkers(const std::vector<MarkerCandidate>& candidates,
                                                   const ReconcileOptions& options) noexcept {
  try {
    auto waiter = Waiter<ReconcileResult>::make();
    core_->reconcile(&candidates, options, [waiter](ReconcileResult result) { waiter->set(std::move(result)); });
    return waiter->wait();
  } catch (const std::exception& e) {
    core_->log(LogLevel::Error, "reconciliation failed unexpectedly: {}", e.what());
    return preserved(candidates);
  }
}

void Client::reconcileChatStreamMarkers(std::vector<MarkerCandidate> candidates, ReconcileOptions options,
                                        Completion<ReconcileResult> done) noexcept {
  ClientCore* core = core_.get();
  std::shared_ptr<std::vector<MarkerCandidate>> owned;
  try {
    owned = std::make_shared<std::vector<MarkerCandidate>>(std::move(candidates));
    core->reconcile(owned.get(), options, [core, owned, done](ReconcileResult result) mutable {
      deliver(*core, std::move(done), std::move(result));
    });
  } catch (const std::exception& e) {
    core->log(LogLevel::Error, "reconciliation failed unexpectedly: {}", e.what());
    deliver(*core, std::move(done), owned ? preserved(*owned) : ReconcileResult{LookupStatus::Unknown, {}, {}});
  }
}

RepairResult Client::repairStaleMarkers(const std::vector<StaleMarker>& markers) noexcept {
  try {
    auto waiter = Waiter<RepairResult>::make();
    core_->repair(markers, [waiter](RepairResult result) { waiter->set(result); });
    return waiter->wait();
  } catch (const std::exception& e) {
    core_->log(LogLevel::Error, "repair failed unexpectedly: {}", e.what());
    RepairResult failed;
    failed.failed = true;
    return failed;
  }
}

void Client::repairStaleMarkers(std::vector<StaleMarker> markers, Completion<RepairResult> done) noexcept {
  ClientCore* core = core_.get();
  try {
    core->repair(std::move(markers), [core, done](RepairResult result) mutable {
      deliver(*core, std::move(done), result);
    });
  } catch (const std::exception& e) {
    core->log(LogLevel::Error, "repair failed unexpectedly: {}", e.what());
    RepairResult failed;
    failed.failed = true;
    deliver(*core, std::move(done), failed);
  }
}

// --- Writer ------------------------------------------------------------------------------------------

std::optional<StreamLock> Client::acquireStreamLock(const std::string& chatId, const std::string& streamId,
                                                    Milliseconds waitFor) {
  auto waiter = Waiter<ClientCore::AcquireOutcome>::make();
  core_->acquire(chatId, streamId, waitFor,
                 [waiter](ClientCore::AcquireOutcome outcome) { waiter->set(std::move(outcome)); });
  std::optional<detail::Deadline> acquiredAt = waiter->wait().value();  // throws the Error
  if (!acquiredAt) return std::nullopt;
  return core_->makeLock(chatId, streamId, *acquiredAt);
}

void Client::acquireStreamLock(std::string chatId, std::string streamId, Milliseconds waitFor,
                               Completion<AcquireResult> done) noexcept {
  ClientCore* core = core_.get();
  try {
    core->acquire(chatId, streamId, waitFor,
                  [core, chatId, streamId, done](ClientCore::AcquireOutcome outcome) mutable {
                    // The lock is made here, so that it releases itself even if the completion never runs.
                    std::shared_ptr<AcquireResult> result;
                    if (!outcome) {
                      result = std::make_shared<AcquireResult>(*outcome.error());
                    } else if (!outcome.value()) {
                      result = std::make_shared<AcquireResult>(std::optional<StreamLock>());
                    } else {
                      result = std::make_shared<AcquireResult>(
                          std::optional<StreamLock>(core->makeLock(chatId, streamId, *outcome.value())));
                    }
                    core->complete([done = std::move(done), result] { done(std::move(*result)); });
                  });
  } catch (const std::exception& e) {
    auto result = std::make_shared<AcquireResult>(Error(ErrorCode::ConnectionLost, e.what()));
    core->complete([done = std::move(done), result] { done(std::move(*result)); });
  }
}

bool Client::writeMarker(const std::string& chatId, const std::string& streamId) {
  auto waiter = Waiter<Result<bool>>::make();
  core_->updateMarker(chatId, streamId, {}, [waiter](Result<bool> changed) { waiter->set(std::move(changed)); });
  return waiter->wait().value();
}

bool Client::clearMarker(const std::string& chatId, const std::string& streamId) {
  auto waiter = Waiter<Result<bool>>::make();
  core_->updateMarker(chatId, std::nullopt, streamId, [waiter](Result<bool> changed) { waiter->set(std::move(changed)); });
  return waiter->wait().value();
}

void Client::writeMarker(std::string chatId, std::string streamId, Completion<Result<bool>> done) noexcept {
  ClientCore* core = core_.get();
  try {
    core->updateMarker(std::move(chatId), std::move(streamId), {}, [core, done](Result<bool> changed) mutable {
      deliver(*core, std::move(done), std::move(changed));
    });
  } catch (const std::exception& e) {
    deliver(*core, std::move(done), Result<bool>(Error(ErrorCode::ConnectionLost, e.what())));
  }
}

void Client::clearMarker(std::string chatId, std::string streamId, Completion<Result<bool>> done) noexcept {
  ClientCore* core = core_.get();
  try {
    core->updateMarker(std::move(chatId), std::nullopt, std::move(streamId), [core, done](Result<bool> changed) mutable {
      deliver(*core, std::move(done), std::move(changed));
    });
  } catch (const std::exception& e) {
    deliver(*core, std::move(done), Result<bool>(Error(ErrorCode::ConnectionLost, e.what())));
  }
}

// --- State -------------------------------------------------------------------------------------------

RedisStatus Client::redisStatus() noexcept {
  try {
    auto waiter = Waiter<RedisStatus>::make();
    core_->redisStatus([waiter](RedisStatus status) { waiter->set(std::move(status)); });
    return waiter->wait();
  } catch (const std::exception& e) {
    RedisStatus status;
    status.mode = RedisStatus::Mode::Unknown;
    status.detail = e.what();
    return status;
  }
}

PendingStreams& Client::pendingStreams() noexcept { return core_->pending_; }

PgPool* Client::postgres() noexcept { return core_->postgres_.get(); }

Counters Client::counters() const noexcept { return core_->counters_.snapshot(); }

BreakerState Client::breakerState() const noexcept { return core_->breaker_.state(detail::Clock::now()); }

const Options& Client::options() const noexcept { return core_->options_; }

void Client::shutdown() noexcept { core_->shutdown(); }

// --- StreamLock release --------------------------------------------------------------------------------

ReleaseOutcome StreamLock::release() noexcept {
  if (!client_ || chatId_.empty()) return ReleaseOutcome::AlreadyReleased;
  try {
    auto waiter = Waiter<ReleaseOutcome>::make();
    client_->release(chatId_, streamId_, [waiter](ReleaseOutcome outcome) { waiter->set(outcome); });
    return waiter->wait();
  } catch (const std::exception&) {
    return ReleaseOutcome::Failed;
  }
}

void StreamLock::release(Completion<ReleaseOutcome> done) noexcept {
  if (!client_) {
    // Not reached: every StreamLock, moved-from ones included, keeps its Client to deliver through.
    done(ReleaseOutcome::AlreadyReleased);
    return;
  }
  ClientCore* core = client_.get();
  try {
    client_->release(chatId_, streamId_, [core, done](ReleaseOutcome outcome) mutable {
      deliver(*core, std::move(done), outcome);
    });
  } catch (const std::exception&) {
    deliver(*core, std::move(done), ReleaseOutcome::Failed);
  }
}

}  // namespace streamlock
