#pragma once
// An OpenMP parallel region that reports errors. An exception may not leave an OpenMP region (the
// runtime calls std::terminate), so a kernel that can fail inside one (a scratch buffer that
// cannot be allocated) would take the whole process down instead of reporting. This runs
// body(thread, threads) on every thread, keeps the first exception and rethrows it after the join.
#include <exception>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace focuspatch {

// threads <= 0: OpenMP's default team size.
template <class Body>
void parallel_region(int threads, Body&& body) {
#ifdef _OPENMP
  std::exception_ptr error;
  auto guarded = [&](int thread, int count) {
    try {
      body(thread, count);
    } catch (...) {
#pragma omp critical(focuspatch_parallel_region_error)
      if (!error) error = std::current_exception();
    }
  };
  if (threads > 0) {
#pragma omp parallel num_threads(threads)
    guarded(omp_get_thread_num(), omp_get_num_threads());
  } else {
#pragma omp parallel
    guarded(omp_get_thread_num(), omp_get_num_threads());
  }
  if (error) std::rethrow_exception(error);
#else
  (void)threads;
  body(0, 1);
#endif
}

}  // namespace focuspatch
