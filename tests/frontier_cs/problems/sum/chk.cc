// Test-suite checker (our own code, testlib message format): a + b, partial credit below it.
#include <cstdio>
#include <cstdlib>
int main(int argc, char** argv) {
  FILE* in = fopen(argv[1], "r"); FILE* out = fopen(argv[2], "r"); FILE* ans = fopen(argv[3], "r");
  long long a, b, got, best;
  if (fscanf(in, "%lld %lld", &a, &b) != 2 || fscanf(ans, "%lld", &best) != 1) { fprintf(stderr, "FAIL bad test\n"); return 3; }
  if (fscanf(out, "%lld", &got) != 1) { fprintf(stderr, "wrong answer no number\n"); return 1; }
  if (got == best) { fprintf(stderr, "ok Ratio: 1.0000\n"); return 0; }
  if (got <= 0 || got > best) { fprintf(stderr, "wrong answer %lld is not in (0, %lld]\n", got, best); return 1; }
  double r = (double)got / best;
  fprintf(stderr, "points %.4f Ratio: %.4f, RatioUnbounded: %.4f\n", r, r, r*2);
  return 7;
}
