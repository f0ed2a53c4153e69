// The backend-neutral conversion arithmetic (Codegen/StorageArith.h) in the
// form the CUDA kernels use it, compiled for this host and run against the
// reference codecs (optrt/Storage.h): f16 decoding and encoding with
// exactNan (integer NaN handling; the CPU kernels use F16C instead) on every
// f16 pattern and NaN payload, stochastic bf16/f16 rounding with the
// counter-based bits, the per-tensor key the GPU makes on the device, the
// remainder split, and the q8 quantiser with the default decade selection
// and a plain table lookup at one lane (a GPU thread per element). What is
// left to a GPU is loads, stores, shuffles and shared memory.
#include "common/Q8BoundaryValues.h"
#include "optdsl/Codegen/StorageArith.h"
#include "optdsl/KernelGen.h"
#include "optrt/Storage.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/ExecutionEngine/ExecutionEngine.h"
#include "mlir/ExecutionEngine/OptUtils.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/Target/LLVMIR/Dialect/Builtin/BuiltinToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Dialect/LLVMIR/LLVMToLLVMIRTranslation.h"
#include "llvm/Support/TargetSelect.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <random>

namespace optdsl {
namespace {

using namespace mlir;

uint32_t bitsOf(float x) {
  uint32_t b;
  std::memcpy(&b, &x, 4);
  return b;
}
float floatOf(uint32_t b) {
  float x;
  std::memcpy(&x, &b, 4);
  return x;
}

/// `void run(const In *in, Out *out, int64_t n)`: out[i .. i+width) =
/// body(in[i .. i+width), i) for i = 0, width, ... < n, compiled for this host.
class Harness {
public:
  using Body = std::function<Value(OpBuilder &, Location, Value x, Value index)>;

  Harness(unsigned inBits, bool inFloat, unsigned outBits, int64_t width, const Body &body,
          const std::function<void(OpBuilder &, ModuleOp)> &globals = {}) {
    static bool once = [] {
      llvm::InitializeNativeTarget();
      llvm::InitializeNativeTargetAsmPrinter();
      return true;
    }();
    (void)once;
    context_.loadDialect<func::FuncDialect, scf::SCFDialect, LLVM::LLVMDialect, arith::ArithDialect,
                         math::MathDialect, vector::VectorDialect>();
    OpBuilder b(&context_);
    Location loc = b.getUnknownLoc();
    OwningOpRef<ModuleOp> module = ModuleOp::create(loc);
    b.setInsertionPointToEnd(module->getBody());
    if (globals)
      globals(b, *module);
    auto ptr = LLVM::LLVMPointerType::get(&context_);
    Type inType = inFloat ? Type(b.getF32Type()) : Type(b.getIntegerType(inBits));
    Type outType = b.getIntegerType(outBits);
    if (outBits == 0)
      outType = b.getF32Type();
    auto function = b.create<func::FuncOp>(loc, "run", b.getFunctionType({ptr, ptr, b.getI64Type()}, {}));
    Block *entry = function.addEntryBlock();
    b.setInsertionPointToStart(entry);
    Value zero = b.create<arith::ConstantOp>(loc, b.getI64IntegerAttr(0));
    Value step = b.create<arith::ConstantOp>(loc, b.getI64IntegerAttr(width));
    auto loop = b.create<scf::ForOp>(loc, zero, entry->getArgument(2), step);
    b.setInsertionPoint(loop.getBody()->getTerminator());
    Value i = loop.getInductionVar();
    Value in = b.create<LLVM::GEPOp>(loc, ptr, inType, entry->getArgument(0), ValueRange{i});
    Value x = b.create<LLVM::LoadOp>(loc, codegen::lanesOf(inType, width), in, 1);
    Value y = body(b, loc, x, i);
    Value out = b.create<LLVM::GEPOp>(loc, ptr, outType, entry->getArgument(1), ValueRange{i});
    b.create<LLVM::StoreOp>(loc, y, out, 1);
    b.setInsertionPointToEnd(entry);
    b.create<func::ReturnOp>(loc);
    if (failed(lowerToLLVMDialect(*module)))
      throw std::runtime_error("lowering the harness failed");
    registerBuiltinDialectTranslation(context_);
    registerLLVMDialectTranslation(context_);
    // A named function: options.transformer is a function_ref to it.
    std::function<llvm::Error(llvm::Module *)> optimize = makeOptimizingTransformer(3, 0, nullptr);
    ExecutionEngineOptions options;
    options.transformer = optimize;
    auto engine = ExecutionEngine::create(*module, options);
    if (!engine)
      throw std::runtime_error("JIT: " + llvm::toString(engine.takeError()));
    engine_ = std::move(*engine);
    auto symbol = engine_->lookup("run");
    if (!symbol)
      throw std::runtime_error("JIT: " + llvm::toString(symbol.takeError()));
    run_ = reinterpret_cast<void (*)(const void *, void *, int64_t)>(*symbol);
  }
  void operator()(const void *in, void *out, int64_t n) const { run_(in, out, n); }

private:
  MLIRContext context_;
  std::unique_ptr<ExecutionEngine> engine_;
  void (*run_)(const void *, void *, int64_t) = nullptr;
};

/// f32 inputs that exercise f16/bf16 encoding: every f16 value, its f32
/// neighbours and the mid-points, NaNs of every f16 payload with both signs
/// and quiet bits, zeros, infinities, and random f32 patterns.
std::vector<float> encodingInputs() {
  std::vector<float> values;
  for (uint32_t h = 0; h < 65536; ++h) {
    float x = optrt::f16ToF32(static_cast<uint16_t>(h));
    values.push_back(x);
    values.push_back(std::nextafter(x, INFINITY));
    values.push_back(std::nextafter(x, -INFINITY));
  }
  for (uint32_t payload = 1; payload < (1u << 23); payload += 4093)
    for (uint32_t sign : {0u, 0x80000000u})
      values.push_back(floatOf(sign | 0x7F800000u | payload));
  std::mt19937 rng(17);
  for (int i = 0; i < (1 << 18); ++i)
    values.push_back(floatOf(static_cast<uint32_t>(rng())));
  while (values.size() % 4)
    values.push_back(0.0f);
  return values;
}

TEST(StorageArith, F16DecodesEveryPatternLikeTheReference) {
  std::vector<uint16_t> in(65536);
  for (uint32_t h = 0; h < 65536; ++h)
    in[h] = static_cast<uint16_t>(h);
  for (int64_t width : {1, 4}) {
    Harness widen(16, false, 0, width, [](OpBuilder &b, Location loc, Value x, Value) {
      return codegen::widenF16(b, loc, x, /*exactNan=*/true);
    });
    std::vector<float> out(in.size());
    widen(in.data(), out.data(), static_cast<int64_t>(in.size()));
    for (uint32_t h = 0; h < 65536; ++h)
      ASSERT_EQ(bitsOf(out[h]), bitsOf(optrt::f16ToF32(static_cast<uint16_t>(h))))
          << "width " << width << " pattern 0x" << std::hex << h;
  }
}

TEST(StorageArith, F16AndBf16EncodeLikeTheReference) {
  std::vector<float> in = encodingInputs();
  for (int64_t width : {1, 4}) {
    Harness f16(32, true, 16, width, [](OpBuilder &b, Location loc, Value x, Value) {
      return codegen::narrowF16(b, loc, x, {}, /*exactNan=*/true);
    });
    Harness bf16(32, true, 16, width, [](OpBuilder &b, Location loc, Value x, Value) {
      return codegen::narrowBf16(b, loc, x);
    });
    std::vector<uint16_t> outF16(in.size()), outBf16(in.size());
    f16(in.data(), outF16.data(), static_cast<int64_t>(in.size()));
    bf16(in.data(), outBf16.data(), static_cast<int64_t>(in.size()));
    for (size_t i = 0; i < in.size(); ++i) {
      ASSERT_EQ(outF16[i], optrt::f32ToF16(in[i])) << "width " << width << " f32 0x" << std::hex << bitsOf(in[i]);
      ASSERT_EQ(outBf16[i], optrt::f32ToBf16(in[i])) << "width " << width << " f32 0x" << std::hex << bitsOf(in[i]);
    }
  }
}

TEST(StorageArith, StochasticRoundingUsesTheCountersBits) {
  std::vector<float> in = encodingInputs();
  const uint32_t key = 0x5eed1234u;
  for (int64_t width : {1, 4}) {
    auto stochastic = [&](bool f16) {
      return Harness(32, true, 16, width, [=](OpBuilder &b, Location loc, Value x, Value index) {
        Value k = b.create<arith::ConstantOp>(loc, b.getI32IntegerAttr(static_cast<int32_t>(key)));
        Value random = codegen::stochasticBits(b, loc, k, index, width);
        return f16 ? codegen::narrowF16(b, loc, x, random, /*exactNan=*/true) : codegen::narrowBf16(b, loc, x, random);
      });
    };
    Harness f16 = stochastic(true), bf16 = stochastic(false);
    std::vector<uint16_t> outF16(in.size()), outBf16(in.size());
    f16(in.data(), outF16.data(), static_cast<int64_t>(in.size()));
    bf16(in.data(), outBf16.data(), static_cast<int64_t>(in.size()));
    for (size_t i = 0; i < in.size(); ++i) {
      uint32_t random = optrt::stochasticBitsFromKey(key, i);
      ASSERT_EQ(outF16[i], optrt::f32ToF16Stochastic(in[i], random)) << "width " << width << " element " << i;
      ASSERT_EQ(outBf16[i], optrt::f32ToBf16Stochastic(in[i], random)) << "width " << width << " element " << i;
    }
  }
}

TEST(StorageArith, DeviceKeyIsTheRuntimesPerTensorKey) {
  // What the CUDA uniforms kernel computes per tensor t at step s from the
  // seed: optrt::stochasticBits(seed, s, t), as the CPU runtime does.
  const uint32_t seed = 0xC0FFEEu;
  const int64_t step = (int64_t(3) << 32) + 12345; // both halves of the step matter
  Harness key(64, false, 32, 1, [=](OpBuilder &b, Location loc, Value, Value index) {
    Value s = b.create<arith::ConstantOp>(loc, b.getI32IntegerAttr(static_cast<int32_t>(seed)));
    Value st = b.create<arith::ConstantOp>(loc, b.getI64IntegerAttr(step));
    return codegen::stochasticKeyBits(b, loc, s, st, index);
  });
  std::vector<int64_t> unused(1000);
  std::vector<uint32_t> out(unused.size());
  key(unused.data(), out.data(), static_cast<int64_t>(out.size()));
  for (size_t t = 0; t < out.size(); ++t)
    ASSERT_EQ(out[t], optrt::stochasticBits(seed, static_cast<uint64_t>(step), t)) << "tensor " << t;
}

TEST(StorageArith, RemainderSplitAndJoinLikeTheReference) {
  std::vector<float> in = encodingInputs();
  for (int64_t width : {1, 4}) {
    // (param << 16) | remainder, then the join of the two halves.
    Harness split(32, true, 32, width, [](OpBuilder &b, Location loc, Value x, Value) {
      auto [param, remainder] = codegen::splitMaster(b, loc, x);
      Type i32 = codegen::lanesOf(b.getI32Type(), codegen::widthOf(x));
      Value high = b.create<arith::ShLIOp>(loc, b.create<arith::ExtUIOp>(loc, i32, param),
                                           codegen::splatInt(b, loc, b.getI32Type(), 16, codegen::widthOf(x)));
      return b.create<arith::OrIOp>(loc, high, b.create<arith::ExtUIOp>(loc, i32, remainder)).getResult();
    });
    Harness join(32, false, 0, width, [](OpBuilder &b, Location loc, Value x, Value) {
      int64_t w = codegen::widthOf(x);
      Type i16 = codegen::lanesOf(b.getIntegerType(16), w);
      Value param = b.create<arith::TruncIOp>(
          loc, i16, b.create<arith::ShRUIOp>(loc, x, codegen::splatInt(b, loc, b.getI32Type(), 16, w)));
      return codegen::joinMaster(b, loc, param, b.create<arith::TruncIOp>(loc, i16, x));
    });
    std::vector<uint32_t> halves(in.size());
    std::vector<float> joined(in.size());
    split(in.data(), halves.data(), static_cast<int64_t>(in.size()));
    join(halves.data(), joined.data(), static_cast<int64_t>(in.size()));
    for (size_t i = 0; i < in.size(); ++i) {
      optrt::ParamRemainder ref = optrt::splitMaster(in[i]);
      ASSERT_EQ(halves[i] >> 16, ref.param) << "width " << width << " f32 0x" << std::hex << bitsOf(in[i]);
      ASSERT_EQ(static_cast<int16_t>(halves[i] & 0xFFFF), ref.remainder) << "width " << width;
      ASSERT_EQ(bitsOf(joined[i]), bitsOf(optrt::joinMaster(ref.param, ref.remainder)))
          << "width " << width << " f32 0x" << std::hex << bitsOf(in[i]);
    }
  }
}

/// The quantiser at one lane with the default decade selection (six
/// compares) and a plain table load of the thresholds, as a GPU thread runs
/// it, at every threshold and its neighbours, every entry, zeros, tiny and
/// subnormal values, +-1, +-Inf, NaN and a log-uniform sweep, in a block of
/// absmax 1; and absmax 0 (every finite value a NaN n: the 0 entry).
TEST(StorageArith, QuantiserAtOneLaneLikeTheReference) {
  for (bool isSigned : {true, false}) {
    const optrt::Q8Map &map = optrt::q8Map(isSigned);
    const char *table = "thresholds";
    auto globals = [&](OpBuilder &b, ModuleOp) {
      Type f32 = b.getF32Type();
      std::vector<float> data(map.thresholds().begin(), map.thresholds().end());
      auto tensor = RankedTensorType::get({static_cast<int64_t>(data.size())}, f32);
      b.create<LLVM::GlobalOp>(b.getUnknownLoc(), LLVM::LLVMArrayType::get(f32, data.size()), true,
                               LLVM::Linkage::Internal, table, DenseElementsAttr::get(tensor, llvm::ArrayRef<float>(data)));
    };
    auto quantiser = [&](float absmax) {
      return Harness(
          32, true, 32, 1,
          [=, &map](OpBuilder &b, Location loc, Value x, Value) {
            codegen::Q8Lookups lookups;
            lookups.threshold = [&](OpBuilder &builder, Location l, Value index) -> Value {
              auto ptr = LLVM::LLVMPointerType::get(builder.getContext());
              Value base = builder.create<LLVM::AddressOfOp>(l, ptr, table);
              Value at = builder.create<LLVM::GEPOp>(l, ptr, builder.getF32Type(), base, ValueRange{index});
              return builder.create<LLVM::LoadOp>(l, builder.getF32Type(), at, 4);
            };
            Value a = b.create<arith::ConstantOp>(loc, b.getF32FloatAttr(absmax));
            return codegen::quantizeQ8(b, loc, map.isSigned(), x, a, lookups);
          },
          globals);
    };
    std::vector<float> values = test::q8BoundaryValues(map, 21);
    for (float absmax : {1.0f, 0.0f}) {
      Harness quantise = quantiser(absmax);
      std::vector<int32_t> codes(values.size());
      quantise(values.data(), codes.data(), static_cast<int64_t>(values.size()));
      size_t differ = 0;
      for (size_t i = 0; i < values.size(); ++i) {
        // quantizeBlockwise of a block whose absmax is `absmax`: with
        // absmax 1 led by 1.0 (|x| <= 1 and non-finite x leave it so); a
        // block of absmax 0 holds only zeros and non-finite values.
        float x = values[i];
        bool possible = absmax == 1.0f ? std::fabs(x) <= 1.0f || !std::isfinite(x) : x == 0.0f || !std::isfinite(x);
        if (!possible)
          continue;
        int expected;
        if (absmax == 0.0f) {
          expected = std::isfinite(x) || std::isnan(x) ? map.zeroCode() : (x > 0 ? 255 : 0);
        } else {
          std::vector<float> block = {1.0f, x};
          std::vector<uint8_t> out(2);
          std::vector<float> scale(1);
          optrt::quantizeBlockwise(map, block, out, scale);
          expected = out[1];
        }
        if (codes[i] != expected && differ++ < 5)
          ADD_FAILURE() << (isSigned ? "signed" : "unsigned") << " absmax " << absmax << " x = " << x
                        << ": code " << codes[i] << ", reference " << expected;
      }
      EXPECT_EQ(differ, 0u);
    }
  }
}

} // namespace
} // namespace optdsl
