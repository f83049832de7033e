// Test-suite interactor (our own code, testlib message format): binary search earns full credit.
#include <cstdio>
int main(int argc, char** argv) {
  FILE* in = fopen(argv[1], "r"); FILE* ans = fopen(argv[3], "r");
  int secret, best; fscanf(in, "%d", &secret); fscanf(ans, "%d", &best);
  printf("100\n"); fflush(stdout);
  int q = 0;
  while (true) {
    char op; int x;
    if (scanf(" %c %d", &op, &x) != 2) { fprintf(stderr, "wrong answer unexpected eof\n"); return 1; }
    if (op == '?') { q++; printf("%d\n", x < secret ? -1 : x > secret ? 1 : 0); fflush(stdout); if (q > 100) { fprintf(stderr, "wrong answer too many\n"); return 1; } }
    else { if (x != secret) { fprintf(stderr, "wrong answer Ratio: 0\n"); return 1; }
      double r = q <= best ? 1.0 : (double)best / q;
      fprintf(stderr, "points %.4f queries %d Ratio: %.4f\n", r, q, r); return r == 1.0 ? 0 : 7; }
  }
}
