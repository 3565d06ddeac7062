// Runtime glue for kernels/cuda: device detection, device memory, the FP8 GEMM dispatch.
#include <cuda_runtime.h>

#include <mutex>
#include <string>
#include <utility>

#include "kernels/cuda/cuda_kernels.h"

namespace troupe::kernels::cuda {

namespace {

std::string cuda_error(const char* what, cudaError_t e) {
  return std::string(what) + ": " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")";
}

}  // namespace

bool cuda_available(std::string* why) {
  // Asked once: cudaGetDeviceCount initialises the driver, which is slow and does not change.
  static std::once_flag once;
  static bool available = false;
  static std::string reason;
  std::call_once(once, [] {
    int count = 0;
    const cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) {
      reason = "no CUDA device: cudaGetDeviceCount returned " + std::to_string(int(e)) + " (" +
               cudaGetErrorString(e) + ")";
      cudaGetLastError();  // clear the error so that later CUDA calls start clean
    } else if (count == 0) {
      reason = "no CUDA device: cudaGetDeviceCount found 0 devices";
    } else {
      // kernels.cu is built for sm_89 and sm_90 (FP8 conversion needs sm_89).
      int device = 0, major = 0, minor = 0;
      cudaGetDevice(&device);
      cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
      cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device);
      if (major * 10 + minor < 89) {
        reason = "no usable CUDA device: device " + std::to_string(device) + " is sm_" +
                 std::to_string(major) + std::to_string(minor) + ", these kernels need sm_89+";
      } else {
        available = true;
      }
    }
  });
  if (!available && why) *why = reason;
  return available;
}

DeviceBuffer::~DeviceBuffer() {
  if (ptr_) cudaFree(ptr_);
}

DeviceBuffer::DeviceBuffer(DeviceBuffer&& o) noexcept
    : ptr_(std::exchange(o.ptr_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
  if (this != &o) {
    if (ptr_) cudaFree(ptr_);
    ptr_ = std::exchange(o.ptr_, nullptr);
    bytes_ = std::exchange(o.bytes_, 0);
  }
  return *this;
}

Status DeviceBuffer::allocate(size_t bytes) {
  if (ptr_) cudaFree(ptr_);
  ptr_ = nullptr;
  bytes_ = 0;
  const cudaError_t e = cudaMalloc(&ptr_, bytes == 0 ? 1 : bytes);
  if (e != cudaSuccess) {
    ptr_ = nullptr;
    return {cuda_error(("cudaMalloc of " + std::to_string(bytes) + " bytes").c_str(), e)};
  }
  bytes_ = bytes;
  return {};
}

Status DeviceBuffer::upload(const void* host, size_t bytes) {
  if (bytes > bytes_) {
    return {"upload of " + std::to_string(bytes) + " bytes into a buffer of " +
            std::to_string(bytes_)};
  }
  const cudaError_t e = cudaMemcpy(ptr_, host, bytes, cudaMemcpyHostToDevice);
  return {e == cudaSuccess ? std::string() : cuda_error("cudaMemcpy host->device", e)};
}

Status DeviceBuffer::download(void* host, size_t bytes) const {
  if (bytes > bytes_) {
    return {"download of " + std::to_string(bytes) + " bytes from a buffer of " +
            std::to_string(bytes_)};
  }
  const cudaError_t e = cudaMemcpy(host, ptr_, bytes, cudaMemcpyDeviceToHost);
  return {e == cudaSuccess ? std::string() : cuda_error("cudaMemcpy device->host", e)};
}

Status synchronize() {
  const cudaError_t e = cudaDeviceSynchronize();
  return {e == cudaSuccess ? std::string() : cuda_error("cudaDeviceSynchronize", e)};
}

const char* to_string(Fp8GemmPath p) {
  switch (p) {
    case Fp8GemmPath::automatic:
      return "automatic";
    case Fp8GemmPath::cublaslt:
      return "cublaslt";
    case Fp8GemmPath::simt:
      return "simt";
  }
  return "?";
}

Status fp8_gemm(const uint8_t* d_qa, const float* d_sa, const uint8_t* d_qb, const float* d_sb,
                float* d_out, int64_t M, int64_t N, int64_t K, Fp8GemmPath path,
                Fp8GemmPath* used) {
  if (M < 1 || N < 1 || K < 1) {
    return {"fp8_gemm: empty shape M=" + std::to_string(M) + " N=" + std::to_string(N) +
            " K=" + std::to_string(K)};
  }
  std::string why;
  if (path == Fp8GemmPath::cublaslt && !detail::lt_applies(M, N, K, &why)) {
    return {"fp8_gemm: cublaslt path requested but " + why};
  }
  if (path != Fp8GemmPath::simt && detail::lt_applies(M, N, K, nullptr)) {
    Status s = detail::lt_fp8_gemm(d_qa, d_sa, d_qb, d_sb, d_out, M, N, K);
    // Automatic mode falls back only when cuBLASLt has no algorithm for the problem; any
    // other failure is reported.
    if (s.ok() || path == Fp8GemmPath::cublaslt || s.error.find("no algorithm") == s.error.npos) {
      if (used) *used = Fp8GemmPath::cublaslt;
      return s;
    }
  }
  if (used) *used = Fp8GemmPath::simt;
  return detail::simt_fp8_gemm(d_qa, d_sa, d_qb, d_sb, d_out, M, N, K);
}

}  // namespace troupe::kernels::cuda
