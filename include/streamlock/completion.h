#pragma once

/// @file
/// Completion callbacks and the value-or-error type of the asynchronous API.

#include <functional>
#include <utility>
#include <variant>

#include "streamlock/error.h"

namespace streamlock {

/// A completion: called exactly once with the outcome of an asynchronous call, never inside the
/// call that started it, on Options::executor if one is set, else on the library's callback thread.
template <class T>
using Completion = std::function<void(T)>;

/// Where completions and ownership-lost callbacks run: the executor is given each one as a task and
/// must run it soon, once, on a thread of its choosing (e.g. Asio's post, a libuv async handle,
/// drogon's loop queue). It is called from the library's I/O thread, so it must only queue the task
/// and return: it must not block or run the task inline. An executor that throws has its task run
/// on the library's callback thread instead.
using Executor = std::function<void(std::function<void()>)>;

/// The outcome of an asynchronous call that can fail: a value, or the Error that the blocking form
/// would have thrown. Failures are values here, never exceptions.
template <class T>
class Result {
 public:
  /// A success.
  Result(T value) : state_(std::in_place_index<0>, std::move(value)) {}  // NOLINT: implicit by design
  /// A failure.
  Result(Error error) : state_(std::in_place_index<1>, std::move(error)) {}  // NOLINT: implicit by design

  /// Whether the call succeeded.
  bool ok() const noexcept { return state_.index() == 0; }
  /// ok().
  explicit operator bool() const noexcept { return ok(); }

  /// The value; throws the Error when the call failed.
  T& value() & {
    if (!ok()) throw std::get<1>(state_);
    return std::get<0>(state_);
  }
  /// The value; throws the Error when the call failed.
  const T& value() const& {
    if (!ok()) throw std::get<1>(state_);
    return std::get<0>(state_);
  }
  /// The value, moved out; throws the Error when the call failed.
  T&& value() && {
    if (!ok()) throw std::get<1>(state_);
    return std::get<0>(std::move(state_));
  }
  /// The error, or nullptr on success.
  const Error* error() const noexcept { return ok() ? nullptr : &std::get<1>(state_); }

 private:
  std::variant<T, Error> state_;
};

}  // namespace streamlock
