#pragma once

// What the three benchmarks share: the servers from the environment (bench/run.sh sets them), a
// raw blocking hiredis connection and a raw libpq connection for the floors, realistic ids, and a
// console reporter that also keeps each benchmark's time so that main() can print a
// library-versus-raw table at the end.

#include <benchmark/benchmark.h>
#include <hiredis/hiredis.h>
#include <libpq-fe.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "streamlock/log.h"

namespace bench {

// The value of a variable that bench/run.sh sets; exits with a clear message when it is missing.
inline std::string requireEnv(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') {
    std::fprintf(stderr, "%s is not set: run the benchmarks through bench/run.sh, or set it yourself\n", name);
    std::exit(2);
  }
  return value;
}

// The library logs warnings and errors to stderr; its per-call info lines would drown the figures.
inline void quietLogger(streamlock::LogLevel level, std::string_view message) {
  if (level >= streamlock::LogLevel::Warning) streamlock::logToStderr(level, message);
}

inline std::string redisUrl() { return requireEnv("STREAMLOCK_BENCH_REDIS_URL"); }
inline std::string databaseUrl() { return requireEnv("STREAMLOCK_BENCH_DATABASE_URL"); }

// Lock keys of the benchmarks live under their own prefix, never the production default, and one
// per process, so that two benchmark runs against one Redis never touch each other's keys.
inline const std::string kKeyPrefix = "bench:" + std::to_string(::getpid()) + ":chat-stream-lock:";

// A chat id shaped like the demo schema's uuid ids (36 characters, like production).
inline std::string chatId(std::size_t i) {
  char text[48];
  std::snprintf(text, sizeof text, "00000000-0000-4000-8000-%012zx", i);
  return text;
}

// A stream id of the same length as real ones (uuids).
inline std::string streamId(std::size_t i) {
  char text[48];
  std::snprintf(text, sizeof text, "5eeaa000-0000-4000-9000-%012zx", i);
  return text;
}

// ---------------------------------------------------------------------------------------------
// Raw Redis: one blocking redisContext, as a hand-written client would use it.

struct ReplyDeleter {
  void operator()(redisReply* reply) const noexcept { freeReplyObject(reply); }
};
using Reply = std::unique_ptr<redisReply, ReplyDeleter>;

class RawRedis {
 public:
  // redis://[:password@]host[:port][/db]: just what bench/run.sh passes.
  explicit RawRedis(const std::string& url) {
    std::string rest = url.substr(url.find("://") == std::string::npos ? 0 : url.find("://") + 3);
    std::string password;
    if (auto at = rest.rfind('@'); at != std::string::npos) {
      std::string auth = rest.substr(0, at);
      password = auth.substr(auth.find(':') == std::string::npos ? 0 : auth.find(':') + 1);
      rest = rest.substr(at + 1);
    }
    std::string db = "0";
    if (auto slash = rest.find('/'); slash != std::string::npos) {
      if (slash + 1 < rest.size()) db = rest.substr(slash + 1);
      rest = rest.substr(0, slash);
    }
    int port = 6379;
    if (auto colon = rest.rfind(':'); colon != std::string::npos) {
      port = std::stoi(rest.substr(colon + 1));
      rest = rest.substr(0, colon);
    }
    context_ = redisConnect(rest.c_str(), port);
    if (context_ == nullptr || context_->err) {
      throw std::runtime_error("cannot connect to Redis at " + rest + ":" + std::to_string(port));
    }
    if (!password.empty()) check(command({"AUTH", password}));
    if (db != "0") check(command({"SELECT", db}));
  }
  ~RawRedis() { redisFree(context_); }
  RawRedis(const RawRedis&) = delete;
  RawRedis& operator=(const RawRedis&) = delete;

  redisContext* get() const noexcept { return context_; }

  void append(const std::vector<std::string>& argv) {
    std::vector<const char*> args;
    std::vector<std::size_t> lengths;
    for (const auto& arg : argv) {
      args.push_back(arg.data());
      lengths.push_back(arg.size());
    }
    redisAppendCommandArgv(context_, static_cast<int>(args.size()), args.data(), lengths.data());
  }
  Reply reply() {
    void* raw = nullptr;
    if (redisGetReply(context_, &raw) != REDIS_OK) throw std::runtime_error(std::string("Redis: ") + context_->errstr);
    return Reply(static_cast<redisReply*>(raw));
  }
  Reply command(const std::vector<std::string>& argv) {
    append(argv);
    return reply();
  }
  static Reply check(Reply reply) {
    if (reply->type == REDIS_REPLY_ERROR) throw std::runtime_error(std::string("Redis error: ") + reply->str);
    return reply;
  }

 private:
  redisContext* context_ = nullptr;
};

// ---------------------------------------------------------------------------------------------
// Raw PostgreSQL: one blocking PGconn.

struct PgResultDeleter {
  void operator()(PGresult* result) const noexcept { PQclear(result); }
};
using PgResultPtr = std::unique_ptr<PGresult, PgResultDeleter>;

class RawPg {
 public:
  explicit RawPg(const std::string& conninfo) : conn_(PQconnectdb(conninfo.c_str())) {
    if (PQstatus(conn_) != CONNECTION_OK) throw std::runtime_error(std::string("PostgreSQL: ") + PQerrorMessage(conn_));
    PQsetNoticeProcessor(conn_, [](void*, const char*) {}, nullptr);
  }
  ~RawPg() { PQfinish(conn_); }
  RawPg(const RawPg&) = delete;
  RawPg& operator=(const RawPg&) = delete;

  PGconn* get() const noexcept { return conn_; }

  // Runs a statement and throws unless it succeeded.
  PgResultPtr exec(const std::string& sql, const std::vector<std::string>& params = {}) {
    std::vector<const char*> values;
    for (const auto& p : params) values.push_back(p.c_str());
    PgResultPtr result(PQexecParams(conn_, sql.c_str(), static_cast<int>(values.size()), nullptr, values.data(),
                                    nullptr, nullptr, 0));
    return check(std::move(result));
  }
  PgResultPtr check(PgResultPtr result) {
    ExecStatusType status = PQresultStatus(result.get());
    if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
      throw std::runtime_error(std::string("PostgreSQL: ") + PQerrorMessage(conn_));
    }
    return result;
  }

 private:
  PGconn* conn_;
};

// ---------------------------------------------------------------------------------------------
// Reporting: the usual console output, plus the time of each benchmark (the median of the
// repetitions when there are some, else the mean of the runs), for the summary table.

class SummaryReporter : public benchmark::ConsoleReporter {
 public:
  // Plain text (no colours), counters as columns.
  SummaryReporter() : ConsoleReporter(OO_Tabular) {}

  void ReportRuns(const std::vector<Run>& reports) override {
    ConsoleReporter::ReportRuns(reports);
    for (const Run& run : reports) {
      if (run.error_occurred) continue;
      const std::string& name = run.run_name.function_name;
      double toNs = 1e9 / benchmark::GetTimeUnitMultiplier(run.time_unit);
      Times& times = run.run_type == Run::RT_Aggregate ? medians_[name] : sums_[name];
      if (run.run_type == Run::RT_Aggregate && run.aggregate_name != "median") continue;
      times.real += run.GetAdjustedRealTime() * toNs;
      times.cpu += run.GetAdjustedCPUTime() * toNs;
      times.runs += 1;
    }
  }

  // Wall-clock (real) or CPU time per iteration in ns, or a negative number when the benchmark
  // did not run (filtered out, or failed).
  double ns(const std::string& name) const { return find(name, &Times::real); }
  double cpuNs(const std::string& name) const { return find(name, &Times::cpu); }

 private:
  struct Times {
    double real = 0;
    double cpu = 0;
    int runs = 0;
  };
  double find(const std::string& name, double Times::*field) const {
    for (const auto* times : {&medians_, &sums_}) {
      auto it = times->find(name);
      if (it != times->end() && it->second.runs > 0) return it->second.*field / it->second.runs;
    }
    return -1;
  }
  std::map<std::string, Times> medians_;
  std::map<std::string, Times> sums_;
};

// "12345" or "-" for a benchmark that was filtered out or failed.
inline std::string formatNs(double ns) {
  if (ns < 0) return "-";
  char text[32];
  std::snprintf(text, sizeof text, "%.0f", ns);
  return text;
}

inline std::string formatRatio(double numerator, double denominator) {
  if (numerator < 0 || denominator <= 0) return "-";
  char text[32];
  std::snprintf(text, sizeof text, "%.2fx", numerator / denominator);
  return text;
}

// Parses the benchmark flags, runs the registered benchmarks through the reporter, and returns
// whether any ran.
inline bool runBenchmarks(int argc, char** argv, SummaryReporter& reporter) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) std::exit(1);
  std::size_t ran = benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  return ran > 0;
}

}  // namespace bench
