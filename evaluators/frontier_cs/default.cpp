// Starting program for a Frontier-CS problem: it compiles, reads the whole input and prints nothing.
// The checker rejects an empty answer, so this scores 0; replace the body with a real solution.
#include <bits/stdc++.h>
using namespace std;

int main() {
    ios::sync_with_stdio(false);
    cin.tie(nullptr);
    string input((istreambuf_iterator<char>(cin)), istreambuf_iterator<char>());
    (void)input;
    return 0;
}
