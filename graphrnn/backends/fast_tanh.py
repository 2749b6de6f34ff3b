"""tanh for float32 kernels. libm's tanh is a scalar call LLVM cannot vectorise; this rational
form (a [13/6] minimax fit on [-7.9053, 7.9053], clamped outside) can be, and stays within
4e-7 of tanh, below float32's resolution of values near 1. float64 kernels keep libm's exact
tanh. One module that every stage imports, so it is compiled once, not once per stage."""

from numba import njit


@njit(cache=True, error_model="numpy", fastmath=True)
def tanh(x):
    x = min(max(x, -7.90531110763549805), 7.90531110763549805)
    x2 = x * x
    p = -2.76076847742355e-16
    p = p * x2 + 2.00018790482477e-13
    p = p * x2 - 8.60467152213735e-11
    p = p * x2 + 5.12229709037114e-08
    p = p * x2 + 1.48572235717979e-05
    p = p * x2 + 6.37261928875436e-04
    p = p * x2 + 4.89352455891786e-03
    q = 1.19825839466702e-06
    q = q * x2 + 1.18534705686654e-04
    q = q * x2 + 2.26843463243900e-03
    q = q * x2 + 4.89352518554385e-03
    return x * p / q
