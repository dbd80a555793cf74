#pragma once
// Dynamic batching: requests from many connections wait in one bounded queue; a single worker
// takes as many as fit in --max-batch images, waiting at most --max-delay for more to arrive after
// the first, and runs them as one forward pass. One worker, because one forward pass already uses
// every core (OpenMP) and batching is what raises throughput; a second pass in parallel would only
// split the cores.
//
// The queue is bounded in images: a full queue refuses at once (Overloaded) instead of letting
// latency grow without limit. A request whose deadline passes while it waits is answered with
// Timeout and never runs. When a batch fails, each of its requests is run again alone, so one
// request that breaks the model cannot fail the others that happened to share its batch.
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "serve/tensors.hpp"

namespace focuspatch::serve {

using Clock = std::chrono::steady_clock;

struct BatchOptions {
  std::size_t max_batch = 8;                 // images per forward pass
  std::chrono::microseconds max_delay{2000};  // how long the first queued request waits for company
  std::size_t max_queue = 256;               // images waiting (not yet running) at most
};

template <class Item, class Result>
class BatchQueue {
 public:
  // Runs one forward pass: results in the order of the items.
  using Run = std::function<std::vector<Result>(std::vector<Item>&)>;
  // Told about every pass: how many items, how long it took.
  using Observe = std::function<void(std::size_t items, double seconds)>;

  BatchQueue(BatchOptions options, Run run, Observe observe = {})
      : options_(options), run_(std::move(run)), observe_(std::move(observe)), worker_([this] { work(); }) {}
  ~BatchQueue() { close(); }
  BatchQueue(const BatchQueue&) = delete;
  BatchQueue& operator=(const BatchQueue&) = delete;

  // Queues the items as one request; the future yields their results or throws ProtocolError.
  std::future<std::vector<Result>> submit(std::vector<Item> items, Clock::time_point deadline = Clock::time_point::max()) {
    auto job = std::make_unique<Job>();
    job->items = std::move(items);
    job->deadline = deadline;
    job->arrival = Clock::now();
    auto future = job->done.get_future();
    {
      std::lock_guard lock(mutex_);
      if (closed_) refuse(Failure::Unavailable, "the server is shutting down");
      if (job->items.size() > options_.max_queue)
        refuse(Failure::BadRequest, "the request holds ", job->items.size(), " images, more than the server queues at once (",
               options_.max_queue, ", --max-queue)");
      if (queued_items_ + job->items.size() > options_.max_queue)
        refuse(Failure::Overloaded, "overloaded: ", queued_items_, " images are already waiting (--max-queue ", options_.max_queue, ")");
      queued_items_ += job->items.size();
      queue_.push_back(std::move(job));
    }
    wake_.notify_all();
    return future;
  }

  std::size_t queued_items() const {
    std::lock_guard lock(mutex_);
    return queued_items_;
  }
  std::size_t queued_requests() const {
    std::lock_guard lock(mutex_);
    return queue_.size();
  }

  // Refuses new requests, finishes every queued one, then stops the worker.
  void close() {
    {
      std::lock_guard lock(mutex_);
      closed_ = true;
    }
    wake_.notify_all();
    if (worker_.joinable()) worker_.join();
  }

 private:
  struct Job {
    std::vector<Item> items;
    Clock::time_point deadline, arrival;
    std::promise<std::vector<Result>> done;
  };

  void work() {
    std::unique_lock lock(mutex_);
    while (true) {
      wake_.wait(lock, [&] { return !queue_.empty() || closed_; });
      if (queue_.empty()) return;  // closed and drained
      // Wait for company until the first request has waited max_delay, the batch is full, or
      // the server is closing (then nothing more will come).
      const auto until = queue_.front()->arrival + options_.max_delay;
      wake_.wait_until(lock, until, [&] { return queued_items_ >= options_.max_batch || closed_; });
      std::vector<std::unique_ptr<Job>> batch;
      std::size_t count = 0;
      const auto now = Clock::now();
      while (!queue_.empty() && (count == 0 || count + queue_.front()->items.size() <= options_.max_batch)) {
        auto job = std::move(queue_.front());
        queue_.pop_front();
        queued_items_ -= job->items.size();
        if (job->deadline < now) {
          job->done.set_exception(std::make_exception_ptr(ProtocolError(Failure::Timeout, "the request's deadline passed while it was queued")));
          continue;
        }
        count += job->items.size();
        batch.push_back(std::move(job));
      }
      if (batch.empty()) continue;
      lock.unlock();
      run_batch(batch);
      lock.lock();
    }
  }

  void run_batch(std::vector<std::unique_ptr<Job>>& batch) {
    std::vector<Item> items;
    for (auto& job : batch) std::move(job->items.begin(), job->items.end(), std::back_inserter(items));
    std::vector<Result> results;
    try {
      results = timed(items);
    } catch (...) {
      if (batch.size() > 1) {
        // Isolate the request that broke the pass: each runs alone and gets its own answer.
        std::size_t at = 0;
        for (auto& job : batch) {
          const std::size_t n = job->items.size();
          std::vector<Item> own(std::make_move_iterator(items.begin() + static_cast<std::ptrdiff_t>(at)),
                                std::make_move_iterator(items.begin() + static_cast<std::ptrdiff_t>(at + n)));
          at += n;
          try {
            job->done.set_value(timed(own));
          } catch (...) {
            job->done.set_exception(as_protocol_error(std::current_exception()));
          }
        }
        return;
      }
      batch.front()->done.set_exception(as_protocol_error(std::current_exception()));
      return;
    }
    std::size_t at = 0;
    for (auto& job : batch) {
      const std::size_t n = job->items.size();
      std::vector<Result> own(std::make_move_iterator(results.begin() + static_cast<std::ptrdiff_t>(at)),
                              std::make_move_iterator(results.begin() + static_cast<std::ptrdiff_t>(at + n)));
      at += n;
      job->done.set_value(std::move(own));
    }
  }

  std::vector<Result> timed(std::vector<Item>& items) {
    const auto start = Clock::now();
    std::vector<Result> results = run_(items);
    if (results.size() != items.size()) refuse(Failure::Internal, "the model returned ", results.size(), " results for ", items.size(), " images");
    if (observe_) observe_(items.size(), std::chrono::duration<double>(Clock::now() - start).count());
    return results;
  }

  static std::exception_ptr as_protocol_error(std::exception_ptr e) {
    try {
      std::rethrow_exception(e);
    } catch (const ProtocolError&) {
      return std::current_exception();
    } catch (const std::exception& x) {
      return std::make_exception_ptr(ProtocolError(Failure::Internal, std::string("inference failed: ") + x.what()));
    } catch (...) {
      return std::make_exception_ptr(ProtocolError(Failure::Internal, "inference failed"));
    }
  }

  BatchOptions options_;
  Run run_;
  Observe observe_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::unique_ptr<Job>> queue_;
  std::size_t queued_items_ = 0;
  bool closed_ = false;
  std::thread worker_;  // last: starts after the members it uses exist
};

}  // namespace focuspatch::serve
