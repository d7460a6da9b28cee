"""Shared by the kernel modules: the `real` fused type, the size above which loops run on
OpenMP threads, and exp/tanh/sqrt in the precision of `real`, written so that GCC
vectorizes the loops that call them.

libm's expf/tanhf are opaque calls that keep a loop scalar; `exp_` and `tanh_` below are
branch-free polynomials for float (within 2 ulp) and libm for double, where the float64
oracle of the tests asks for full precision. The modules that use them are compiled with
-fno-trapping-math (so GCC turns the float selects into vector blends) and -fno-math-errno
(so sqrt is one instruction), never -ffast-math: that could fold away the rounding in `_expf`.
"""
from libc.math cimport exp, sqrt, sqrtf, tanh
from libc.stdint cimport int32_t
from libc.string cimport memcpy

ctypedef fused real:
    float
    double

cdef enum:
    # Elements below which a loop runs on one thread. After a parallel loop GCC's OpenMP
    # workers spin for milliseconds before they sleep, taking the cores that NumPy's
    # OpenBLAS threads want for the next matrix product (OpenBLAS issue #3187); only loops
    # this large gain more from the extra threads than that costs.
    PARALLEL_MIN = 1 << 20


cdef inline float _bits_to_float(int32_t bits) noexcept nogil:
    cdef float value
    memcpy(&value, &bits, 4)
    return value


cdef inline int32_t _float_to_bits(float value) noexcept nogil:
    cdef int32_t bits
    memcpy(&bits, &value, 4)
    return bits


cdef inline float _expf(float x) noexcept nogil:
    """e^x = 2^n·e^r with n = round(x/ln 2), |r| ≤ ln2/2, and e^r by Cephes' degree-7 polynomial.

    x > 88 saturates at e^88 (callers pass x ≤ 0 or saturate first); x < -87 gives 0; NaN stays NaN.
    """
    cdef float c = x, shifted, n, r, p
    c = <float>88.0 if c > <float>88.0 else c
    c = <float>-87.0 if c < <float>-87.0 else c
    shifted = c * <float>1.44269504088896341 + <float>12582912.0   # 1.5·2^23: rounds to an integer
    n = shifted - <float>12582912.0
    r = c - n * <float>0.693359375
    r = r + n * <float>2.12194440e-4                                # ln 2 in two parts (Cody-Waite)
    p = <float>1.9875691500e-4
    p = p * r + <float>1.3981999507e-3
    p = p * r + <float>8.3334519073e-3
    p = p * r + <float>4.1665795894e-2
    p = p * r + <float>1.6666665459e-1
    p = p * r + <float>5.0000001201e-1
    p = p * r * r + r + <float>1.0
    p = p * _bits_to_float((_float_to_bits(shifted) - 0x4B400000 + 127) << 23)   # · 2^n
    return <float>0.0 if x < <float>-87.0 else p


cdef inline float _tanhf(float x) noexcept nogil:
    """tanh x: x + x³·P(x²) for |x| < 0.625 (no cancellation near 0), else sign(x)·(1 - 2/(e^(2|x|) + 1))."""
    cdef float z = x * x, small, large, a = x if x >= 0 else -x
    small = <float>-5.70498872745e-3
    small = small * z + <float>2.06390887954e-2
    small = small * z - <float>5.37397155531e-2
    small = small * z + <float>1.33314422036e-1
    small = small * z - <float>3.33332819422e-1
    small = small * z * x + x
    a = <float>44.0 if a > <float>44.0 else a
    large = <float>1.0 - <float>2.0 / (_expf(a + a) + <float>1.0)
    large = large if x >= 0 else -large
    return small if z < <float>0.390625 else large


cdef inline real exp_(real x) noexcept nogil:
    if real is float:
        return _expf(x)
    else:
        return exp(x)


cdef inline real tanh_(real x) noexcept nogil:
    if real is float:
        return _tanhf(x)
    else:
        return tanh(x)


cdef inline real sqrt_(real x) noexcept nogil:
    if real is float:
        return sqrtf(x)
    else:
        return sqrt(x)
