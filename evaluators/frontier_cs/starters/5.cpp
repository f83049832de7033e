// Starting program for frontier_cs/5 (Hamiltonian Path Challenge): reads the graph and answers with
// the shortest valid path, the single vertex 1 -- valid, and as poor as an answer can be.
#include <bits/stdc++.h>
using namespace std;

int main() {
    ios::sync_with_stdio(false);
    cin.tie(nullptr);
    long long n = 0, m = 0;
    cin >> n >> m;
    cout << 1 << "\n" << 1 << "\n";
    return 0;
}
