#include <cstdio>
int main() { std::puts("sparta"); return 0; }
