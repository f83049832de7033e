// Starting program for frontier_cs/1 (Treasure Packing): reads the JSON of item types and packs
// nothing -- every count 0 -- which is always a valid bag, so the checker accepts it (ratio 0:
// it does not beat the baseline heuristic).
#include <bits/stdc++.h>
using namespace std;

int main() {
    string input((istreambuf_iterator<char>(cin)), istreambuf_iterator<char>());
    vector<string> keys;
    // Keys are the quoted strings directly followed by ':' (the values are lists of numbers).
    for (size_t i = 0; i < input.size(); i++) {
        if (input[i] != '"') continue;
        size_t end = input.find('"', i + 1);
        if (end == string::npos) break;
        size_t next = input.find_first_not_of(" \t\r\n", end + 1);
        if (next != string::npos && input[next] == ':') keys.push_back(input.substr(i + 1, end - i - 1));
        i = end;
    }
    cout << "{\n";
    for (size_t k = 0; k < keys.size(); k++) {
        cout << "  \"" << keys[k] << "\": 0" << (k + 1 < keys.size() ? "," : "") << "\n";
    }
    cout << "}\n";
    return 0;
}
