// Starting program for frontier_cs/27 (no axis-parallel rectangle): every cell of the first row.
// Four corners of a rectangle need two rows, so one row is always valid -- m points, far from the
// bound of about n * sqrt(m) + m.
#include <bits/stdc++.h>
using namespace std;

int main() {
    long long n = 0, m = 0;
    cin >> n >> m;
    string out = to_string(m) + "\n";
    for (long long c = 1; c <= m; c++) out += "1 " + to_string(c) + "\n";
    fputs(out.c_str(), stdout);
    return 0;
}
