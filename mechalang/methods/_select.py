"""The k-th smallest of a non-negative float tensor seen in slices: the streamed form of
`sparse._kth_smallest` (the same radix select, one 16-bit digit per pass over all the slices).

    sel = StreamedKthSmallest(k, torch.float32)
    while not sel.done:
        for part in slices():
            sel.observe(part)
        sel.end_pass()
    threshold = sel.value()            # a 0-d tensor of the slices' dtype

Non-negative floats order like their bit patterns read as integers, so the value is found digit
by digit: pass i counts, among the entries whose higher digits equal the prefix found so far, how
many have each value of digit i (a 65536-bin histogram summed over the slices), and the bucket that
holds the k-th entry extends the prefix. float32 takes 2 passes, float64 4. Memory: the
histogram and one slice's scratch, whatever the tensor's size; exact, so the result is the one a
whole-tensor selection finds.
"""

from ._lazy import torch

_SHIFTS = {"float32": (16, 0), "float64": (48, 32, 16, 0)}


class StreamedKthSmallest:
    def __init__(self, k: int, dtype):
        name = str(dtype).removeprefix("torch.")
        if name not in _SHIFTS:
            raise TypeError(f"the streamed selection needs float32 or float64, got {dtype}")
        if k < 1:
            raise ValueError(f"k = {k} must be at least 1")
        self.dtype = dtype
        self.int_dtype = torch.int32 if name == "float32" else torch.int64
        self.shifts = _SHIFTS[name]
        self.remaining = k  # rank of the wanted entry among the candidates left
        self.prefix = 0  # the digits found so far
        self.pass_no = 0
        self.hist = None
        self.seen = 0

    @property
    def done(self) -> bool:
        return self.pass_no == len(self.shifts)

    def observe(self, values) -> None:
        """One slice (any shape) of the non-negative values, during a pass."""
        bits = values.contiguous().view(self.int_dtype).reshape(-1)
        shift = self.shifts[self.pass_no]
        if self.pass_no:  # only the candidates: higher digits equal to the prefix so far
            bits = bits[(bits >> self.shifts[self.pass_no - 1]) == self.prefix]
            digit = (bits >> shift) & 0xFFFF
        else:  # the first digit needs no mask: the sign bit of a non-negative float is 0
            digit = bits >> shift
            self.seen += values.numel()
        counts = torch.bincount(digit, minlength=65536)
        self.hist = counts if self.hist is None else self.hist.add_(counts)

    def end_pass(self) -> None:
        if self.hist is None:
            raise ValueError("the streamed selection saw no values")
        if self.pass_no == 0 and self.remaining > self.seen:
            raise ValueError(f"k = {self.remaining} is outside [1, {self.seen}]")
        cumulative = self.hist.cumsum(0)
        d = int(torch.searchsorted(cumulative, self.remaining))  # first bucket reaching the k-th
        if d:
            self.remaining -= int(cumulative[d - 1])
        self.prefix = (self.prefix << 16) | d
        self.pass_no += 1
        self.hist = None

    def value(self):
        if not self.done:
            raise ValueError("the streamed selection needs more passes")
        return torch.tensor(self.prefix, dtype=self.int_dtype).view(self.dtype)
