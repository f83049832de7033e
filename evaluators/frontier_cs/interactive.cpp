// Starting program for an interactive Frontier-CS problem: it compiles and ends without a query.
// The interactor then reports a wrong answer, so this scores 0. Read the statement's protocol, then
// write the queries to stdout (flush after each) and read the replies from stdin.
#include <bits/stdc++.h>
using namespace std;

int main() {
    return 0;
}
